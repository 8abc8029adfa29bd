// Internal to the model: one transformer block's parameters, buffers and the
// activations it keeps for backward.
#pragma once

#include "model/model.h"

namespace nmoe {

struct Model::Layer {
  int64_t index = 0;
  bool moe = false;
  int64_t moe_index = -1;  // position among MoE layers

  Param *attn_norm = nullptr, *wqkv = nullptr, *wo = nullptr, *ffn_norm = nullptr;
  Param *w13 = nullptr, *w2 = nullptr;  // dense MLP
  Param *router = nullptr, *ew13 = nullptr, *ew2 = nullptr;  // MoE
  Param *sw13 = nullptr, *sw2 = nullptr;                     // shared experts

  Tensor bias, counts, counts_eval;  // router bias [E], expert counts [E_local] (I32)

  // Saved activations (a, logits, xe, ae and sa: views of buffers shared by
  // all layers, which the backward writes again before it reads them; ye,
  // unless keeps_expert_outputs(): the backward's dye buffer, not read in
  // backward; model.h).
  Tensor xn1, rstd1, qkv, attn, lse, mid, xn2, rstd2;
  Tensor h13, a;                                     // dense MLP
  Tensor logits, scores, idx, gates, offsets, pos;   // router and permutation
  Tensor xe, h13e, ae, ye;                           // routed experts
  Tensor sh13, sa;                                   // shared experts
};

}  // namespace nmoe

// Routed experts across ranks (expert parallelism). The source's side is the
// same as on one rank (router, plan, dispatch into expert order, combine);
// between dispatch and combine the rows travel to their experts' owners and
// back (dist/expert_transport.h). The owner runs its experts on each source's
// block separately, with exactly the ops a single rank runs on that block, so
// results do not depend on the rank count. Backward re-sends the dispatched
// rows with their output gradients and the owner recomputes the expert
// forward instead of keeping activations for every row it might receive.
#include "dist/expert_transport.h"
#include "model/model_layer.h"

namespace nmoe {

namespace {
std::string where(const char* phase, int64_t layer) {
  return std::string("MoE layer ") + std::to_string(layer) + " " + phase;
}

// param's gradient inside a flat leaf laid out like the expert group.
Tensor leaf_view(const Tensor& leaf, const Param& p, int64_t group_begin) {
  const size_t esize = dtype_size(leaf.dtype);
  return Tensor(static_cast<char*>(leaf.data) + (p.offset - group_begin) * esize, leaf.dtype, p.g.shape);
}
}  // namespace

void Model::moe_forward_ep(Layer& L) {
  NMOE_CHECK(transport_ != nullptr, "expert parallelism over ", opt_.world, " ranks needs a transport");
  Backend& B = backend_;
  ExpertTransport& T = *transport_;
  T.send(L.xe, Tensor(), L.offsets, where("forward dispatch", L.index));
  for (int src = 0; src < opt_.world; ++src) {
    ReceivedBlock blk = T.received(src);
    if (blk.rows == 0) continue;
    const Tensor h13 = own_h13_.slice(0, blk.rows), a = own_a_.slice(0, blk.rows), y = own_y_.slice(0, blk.rows);
    B.grouped_matmul(blk.a, L.ew13->wc, true, blk.offsets, h13);
    B.swiglu_fwd(h13, a);
    B.grouped_matmul(a, L.ew2->wc, true, blk.offsets, y);
    T.put_back(src, y);
  }
  B.copy(L.ye, T.finish_return(where("forward return", L.index)));
}

void Model::moe_backward_ep(Layer& L) {
  Backend& B = backend_;
  ExpertTransport& T = *transport_;
  const int64_t g0 = params_.group(ParamGroup::Expert).begin;
  T.send(L.xe, dye_, L.offsets, where("backward dispatch", L.index));
  for (int src = 0; src < opt_.world; ++src) {
    ReceivedBlock blk = T.received(src);
    if (blk.rows == 0) continue;
    const int64_t n = blk.rows;
    const Tensor h13 = own_h13_.slice(0, n), a = own_a_.slice(0, n), da = own_da_.slice(0, n);
    const Tensor dh13 = own_dh13_.slice(0, n), dx = own_y_.slice(0, n);
    const bool leaves = !expert_leaves_.empty();
    B.grouped_matmul(blk.a, L.ew13->wc, true, blk.offsets, h13);
    B.grouped_matmul(blk.b, L.ew2->wc, false, blk.offsets, da);
    B.swiglu_bwd(da, h13, dh13, a);  // a: the forward's activation again
    B.grouped_matmul_wgrad(blk.b, a, blk.offsets, leaves ? leaf_view(expert_leaves_[src], *L.ew2, g0) : L.ew2->g);
    B.grouped_matmul(dh13, L.ew13->wc, false, blk.offsets, dx);
    B.grouped_matmul_wgrad(dh13, blk.a, blk.offsets,
                           leaves ? leaf_view(expert_leaves_[src], *L.ew13, g0) : L.ew13->g);
    T.put_back(src, dx);
  }
  const Tensor dxe = T.finish_return(where("backward return", L.index));
  B.moe_dispatch_bwd(dxe, L.pos, static_cast<int>(shape_.top_k), dxn_);
}

}  // namespace nmoe

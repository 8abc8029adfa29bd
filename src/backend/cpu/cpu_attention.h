// Shared shape logic of the attention ops (rope, attention fwd/bwd) on the
// packed qkv layout [N, 3, H, Dh]: row n holds H q heads, then H k heads, then H v heads.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_common.h"

namespace nmoe::cpu {

struct QkvLayout {
  int64_t N = 0, H = 0, Dh = 0, T = 0, B = 0;

  int64_t row_stride() const { return 3 * H * Dh; }
  // Element offsets of token n's q / k / v for head h inside qkv.
  int64_t q(int64_t n, int64_t h) const { return n * row_stride() + h * Dh; }
  int64_t k(int64_t n, int64_t h) const { return q(n, h) + H * Dh; }
  int64_t v(int64_t n, int64_t h) const { return q(n, h) + 2 * H * Dh; }
  // Offset of token n, head h in an [N, H*Dh] tensor (out, dout).
  int64_t head(int64_t n, int64_t h) const { return (n * H + h) * Dh; }
  // Offset of (sequence b, head h, position t) in lse [B, H, T].
  int64_t lse(int64_t b, int64_t h, int64_t t) const { return (b * H + h) * T + t; }
};

inline QkvLayout qkv_layout(const char* op, const Tensor& qkv, int seq_len) {
  NMOE_CHECK(qkv.ndim() == 4 && qkv.size(1) == 3, op, ": qkv must be [N, 3, H, Dh], got ",
             qkv.shape.str());
  check_data(op, "qkv", qkv);
  QkvLayout L;
  L.N = qkv.size(0);
  L.H = qkv.size(2);
  L.Dh = qkv.size(3);
  L.T = seq_len;
  NMOE_CHECK(seq_len > 0 && L.N % seq_len == 0, op, ": seq_len ", seq_len,
             " must be positive and divide the token count N = ", L.N);
  L.B = L.N / seq_len;
  return L;
}

}  // namespace nmoe::cpu

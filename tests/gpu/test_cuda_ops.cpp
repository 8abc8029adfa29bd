// CUDA backend vs the CPU reference: memory ops, GEMMs, add, embedding,
// RMSNorm, RoPE and SwiGLU (F32), forward and backward.
#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

TEST(CudaMemory, CopiesAndFillEveryDtype) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(1);
  HostTensor h = uniform(F, Shape{1000, 3}, rng);
  DevTensor a(h), b(F, Shape{3000});
  gpu().copy(b, a);
  NMOE_EXPECT_SAME(b.download(), h);
  struct Case { DType dt; double v; };
  for (Case c : {Case{DType::F32, -1.25}, Case{DType::F32, 0.0}, Case{DType::F64, 3.5},
                 Case{DType::BF16, 0.3}, Case{DType::I32, -7}, Case{DType::I64, 1e12},
                 Case{DType::U8, 200}, Case{DType::U16, 60000}, Case{DType::U32, 4e9}}) {
    HostTensor want(c.dt, Shape{1031});
    cpu().fill(want, c.v);
    DevTensor d(c.dt, Shape{1031});
    gpu().fill(d, c.v);
    NMOE_EXPECT_SAME(d.download(), want) << dtype_name(c.dt);
  }
  DevTensor i(DType::I32, Shape{4});
  EXPECT_THROW(gpu().fill(i, 1e10), Error);
}

TEST(CudaMemory, Convert) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(9);
  HostTensor x = uniform(DType::F64, Shape{3001}, rng, -100, 100);
  HostTensor f32(DType::F32, Shape{3001}), back(DType::F64, Shape{3001});
  cpu().convert(f32, x);
  cpu().convert(back, f32);
  DevTensor dx(x), df(DType::F32, Shape{3001}), dback(DType::F64, Shape{3001});
  gpu().convert(df, dx);
  gpu().convert(dback, df);
  NMOE_EXPECT_SAME(df.download(), f32);
  NMOE_EXPECT_SAME(dback.download(), back);
  // F32 -> BF16 -> F32 rounds to nearest even: bf16(x) is the top 16 bits after rounding.
  DevTensor dbf(DType::BF16, Shape{3001}), dround(DType::F32, Shape{3001});
  gpu().convert(dbf, df);
  gpu().convert(dround, dbf);
  HostTensor round = dround.download();
  for (int64_t i = 0; i < 3001; ++i) {
    uint32_t bits;
    const float v = f32.t().ptr<float>()[i];
    std::memcpy(&bits, &v, 4);
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
    float want;
    std::memcpy(&want, &bits, 4);
    ASSERT_EQ(round.t().ptr<float>()[i], want) << i;
  }
  DevTensor di(DType::I32, Shape{3001});
  EXPECT_THROW(gpu().convert(di, df), Error);
}

// fill and convert move 16-byte vectors from a 16-byte aligned start and
// finish element by element; other starts go element by element throughout.
// Lengths around the 16-byte vector, starts at every offset a dtype allows;
// the bytes around the tensor stay untouched.
TEST(CudaMemory, FillAndConvertAtAnyStartAndLength) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(10);
  struct FillCase { DType dt; double v; };
  for (FillCase c : {FillCase{DType::F32, -1.25}, {DType::BF16, 0.3}, {DType::F64, 3.5},
                     {DType::U8, 200}, {DType::U16, 60000}, {DType::I32, -7}}) {
    const size_t es = dtype_size(c.dt);
    for (int64_t n : {1, 3, 7, 8, 9, 17, 1031})
      for (size_t shift = 0; shift < 16; shift += es) {
        HostTensor want(c.dt, Shape{n});
        cpu().fill(want, c.v);
        ShiftedTensor d(c.dt, Shape{n}, shift);
        gpu().fill(d.whole(), 171);  // 0xAB around the tensor
        gpu().fill(d, c.v);
        HostTensor all(DType::U8, d.whole().shape);
        gpu().copy_to_host(all.t().data, d.whole());
        const auto* b = all.t().ptr<uint8_t>();
        EXPECT_EQ(std::memcmp(b + shift, want.t().data, want.t().nbytes()), 0)
            << dtype_name(c.dt) << " n " << n << " shift " << shift;
        bool around = true;
        for (size_t i = 0; i < size_t(all.numel()); ++i)
          if (i < shift || i >= shift + want.t().nbytes()) around = around && b[i] == 171;
        EXPECT_TRUE(around) << dtype_name(c.dt) << " n " << n << " shift " << shift;
      }
  }
  struct ConvertCase { DType to, from; };
  for (ConvertCase c : {ConvertCase{DType::BF16, DType::F32}, {DType::F32, DType::BF16},
                        {DType::F32, DType::F64}, {DType::F64, DType::F32},
                        {DType::BF16, DType::F64}, {DType::F64, DType::BF16}}) {
    for (int64_t n : {1, 7, 8, 9, 16, 23, 4101}) {
      HostTensor x64 = uniform(DType::F64, Shape{n}, rng, -100, 100);
      HostTensor src(c.from, Shape{n});
      if (c.from == DType::BF16) {  // bf16 values from the CPU's F32, rounded on the GPU
        HostTensor x32(DType::F32, Shape{n});
        cpu().convert(x32, x64);
        DevTensor d32(x32), dbf(DType::BF16, Shape{n});
        gpu().convert(dbf, d32);
        gpu().copy_to_host(src.t().data, dbf);
      } else {
        cpu().convert(src, x64);
      }
      HostTensor want;
      for (size_t ss : {size_t{0}, dtype_size(c.from)})
        for (size_t ds : {size_t{0}, dtype_size(c.to)}) {
          ShiftedTensor s(c.from, Shape{n}, ss), d(c.to, Shape{n}, ds);
          gpu().copy_from_host(s, src.t().data);
          gpu().fill(d.whole(), 171);
          gpu().convert(d, s);
          HostTensor got(c.to, Shape{n}), all(DType::U8, d.whole().shape);
          gpu().copy_to_host(got.t().data, d);
          gpu().copy_to_host(all.t().data, d.whole());
          if (ss == 0 && ds == 0) {  // the vector path, checked on its own where exact
            want = got;
            for (int64_t i = 0; i < n; ++i) {
              if (c.from == DType::F32 && c.to == DType::BF16) {
                uint32_t bits;
                std::memcpy(&bits, src.t().ptr<float>() + i, 4);
                const uint16_t rne = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                ASSERT_EQ(got.t().ptr<uint16_t>()[i], rne) << "F32 -> BF16 element " << i;
              }
              if (c.from == DType::BF16 && c.to == DType::F32) {
                uint32_t bits;
                std::memcpy(&bits, got.t().ptr<float>() + i, 4);
                ASSERT_EQ(bits, uint32_t(src.t().ptr<uint16_t>()[i]) << 16) << "BF16 -> F32 element " << i;
              }
            }
          }
          NMOE_EXPECT_SAME(got, want) << dtype_name(c.from) << " -> " << dtype_name(c.to) << " n "
                                      << n << " shifts " << ss << " " << ds;
          const auto* b = all.t().ptr<uint8_t>();
          bool around = true;
          for (size_t i = 0; i < size_t(all.numel()); ++i)
            if (i < ds || i >= ds + got.t().nbytes()) around = around && b[i] == 171;
          EXPECT_TRUE(around) << dtype_name(c.from) << " -> " << dtype_name(c.to) << " n " << n;
          // Against the CPU where it converts these dtypes (F32 <-> F64).
          if (c.from != DType::BF16 && c.to != DType::BF16) {
            HostTensor cpu_out(c.to, Shape{n});
            cpu().convert(cpu_out, src);
            NMOE_EXPECT_SAME(got, cpu_out);
          }
        }
    }
  }
}

struct MatmulCase { int64_t M, N, K; };

TEST(CudaMatmul, AllTransposesAlphaBeta) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(2);
  for (MatmulCase s : {MatmulCase{1, 1, 1}, {7, 5, 3}, {64, 96, 128}, {33, 257, 70}, {5, 4, 0}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (double beta : {0.0, 0.5}) {
          HostTensor A = uniform(F, ta ? Shape{s.K, s.M} : Shape{s.M, s.K}, rng);
          HostTensor B = uniform(F, tb ? Shape{s.N, s.K} : Shape{s.K, s.N}, rng);
          HostTensor C = beta == 0 ? poisoned(F, Shape{s.M, s.N}) : uniform(F, Shape{s.M, s.N}, rng);
          DevTensor dA(A), dB(B), dC(C);
          cpu().matmul(A, ta, B, tb, C, 1.5, beta);
          gpu().matmul(dA, ta, dB, tb, dC, 1.5, beta);
          NMOE_EXPECT_CLOSE(dC.download(), C, kTol) << s.M << "x" << s.N << "x" << s.K << " ta "
                                                    << ta << " tb " << tb << " beta " << beta;
        }
  }
}

// Segments: ragged with empty experts, and one expert taking every row.
std::vector<std::vector<int32_t>> segment_cases(int64_t M) {
  const int32_t m = static_cast<int32_t>(M);
  return {{0, 3, 3, m / 2, m / 2, m - 1, m}, {0, 0, 0, m, m, m, m}, {0, m, m, m, m, m, m}};
}

TEST(CudaMatmul, GroupedAndWgrad) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(3);
  const int64_t M = 77, E = 6, R = 48, S = 40;
  for (const auto& off : segment_cases(M)) {
    HostTensor offsets = indices(Shape{E + 1}, off);
    DevTensor doff(offsets);
    HostTensor W = uniform(F, Shape{E, R, S}, rng);
    DevTensor dW_(W);
    for (int transW = 0; transW < 2; ++transW) {
      HostTensor X = uniform(F, Shape{M, transW ? S : R}, rng);
      HostTensor Y = poisoned(F, Shape{M, transW ? R : S});
      DevTensor dX(X), dY(Y);
      cpu().grouped_matmul(X, W, transW, offsets, Y);
      gpu().grouped_matmul(dX, dW_, transW, doff, dY);
      NMOE_EXPECT_CLOSE(dY.download(), Y, kTol) << "transW " << transW;
    }
    HostTensor G = uniform(F, Shape{M, R}, rng), X = uniform(F, Shape{M, S}, rng);
    HostTensor acc = uniform(F, Shape{E, R, S}, rng);
    DevTensor dG(G), dX(X), dacc(acc);
    cpu().grouped_matmul_wgrad(G, X, offsets, acc);
    gpu().grouped_matmul_wgrad(dG, dX, doff, dacc);
    NMOE_EXPECT_CLOSE(dacc.download(), acc, kTol);
  }
  HostTensor bad = indices(Shape{E + 1}, {0, 5, 3, 10, 20, 30, M});
  DevTensor dbad(bad), dX(F, Shape{M, S}), dY(F, Shape{M, R}), dW(F, Shape{E, R, S});
  EXPECT_THROW(gpu().grouped_matmul(dX, dW, true, dbad, dY), Error);
}

TEST(CudaElementwise, AddAliasing) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(4);
  HostTensor a = uniform(F, Shape{1000, 7}, rng), b = uniform(F, Shape{7000}, rng);
  HostTensor out = poisoned(F, Shape{7000});
  DevTensor da(a), db(b), dout(out);
  cpu().add(out, a, b, -0.75);
  gpu().add(dout, da, db, -0.75);
  NMOE_EXPECT_CLOSE(dout.download(), out, kTol);
  cpu().add(a, a, b, 2.0);  // out aliases a
  gpu().add(da, da, db, 2.0);
  NMOE_EXPECT_CLOSE(da.download(), a, kTol);
}

TEST(CudaEmbedding, ForwardBackward) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(5);
  for (int64_t V : {5, 300}) {
    const int64_t N = 257, D = 96;
    HostTensor W = uniform(F, Shape{V, D}, rng);
    HostTensor tok = random_ids(Shape{N}, 0, static_cast<int32_t>(V - 1), rng);
    for (int i = 0; i < 40; ++i) tok.t().ptr<int32_t>()[i * 3] = 1;  // a heavily repeated id
    HostTensor out = poisoned(F, Shape{N, D});
    DevTensor dW(W), dtok(tok), dout(out);
    cpu().embedding_fwd(W, tok, out);
    gpu().embedding_fwd(dW, dtok, dout);
    NMOE_EXPECT_SAME(dout.download(), out);
    HostTensor g = uniform(F, Shape{N, D}, rng), acc = uniform(F, Shape{V, D}, rng);
    DevTensor dg(g), dacc(acc);
    cpu().embedding_bwd(g, tok, acc);
    gpu().embedding_bwd(dg, dtok, dacc);
    NMOE_EXPECT_CLOSE(dacc.download(), acc, kTol) << "V " << V;
  }
}

TEST(CudaRmsNorm, ForwardBackward) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(6);
  for (auto [N, D] : {std::pair<int64_t, int64_t>{1, 16}, {130, 100}, {67, 1024}, {300, 2048}}) {
    HostTensor x = uniform(F, Shape{N, D}, rng), w = uniform(F, Shape{D}, rng, 0.5, 1.5);
    HostTensor y = poisoned(F, Shape{N, D}), r = poisoned(F, Shape{N});
    DevTensor dx(x), dw(w), dy(y), dr(r);
    cpu().rmsnorm_fwd(x, w, 1e-5, y, r);
    gpu().rmsnorm_fwd(dx, dw, 1e-5, dy, dr);
    NMOE_EXPECT_CLOSE(dy.download(), y, kTol);
    NMOE_EXPECT_CLOSE(dr.download(), r, kTol);
    HostTensor g = uniform(F, Shape{N, D}, rng);
    HostTensor gx = uniform(F, Shape{N, D}, rng), gw = uniform(F, Shape{D}, rng);
    DevTensor dg(g), dgx(gx), dgw(gw);
    cpu().rmsnorm_bwd(g, x, w, r, gx, gw);
    gpu().rmsnorm_bwd(dg, dx, dw, dr, dgx, dgw);
    NMOE_EXPECT_CLOSE(dgx.download(), gx, kTol) << N << "x" << D;
    NMOE_EXPECT_CLOSE(dgw.download(), gw, kTol) << N << "x" << D;
  }
}

TEST(CudaRope, ForwardAndInverse) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(7);
  for (auto [B, T, H, Dh] : {std::tuple<int64_t, int, int64_t, int64_t>{2, 9, 2, 8},
                             {1, 130, 3, 64}, {3, 40, 2, 128}}) {
    const int64_t N = B * T;
    HostTensor qkv = uniform(F, Shape{N, 3, H, Dh}, rng);
    HostTensor c = uniform(F, Shape{T + 3, Dh / 2}, rng), s = uniform(F, Shape{T + 3, Dh / 2}, rng);
    DevTensor dqkv(qkv), dc(c), ds(s);
    for (bool inverse : {false, true}) {
      cpu().rope(qkv, c, s, T, inverse);
      gpu().rope(dqkv, dc, ds, T, inverse);
      NMOE_EXPECT_CLOSE(dqkv.download(), qkv, kTol) << "inverse " << inverse;
    }
  }
}

TEST(CudaSwiglu, ForwardBackward) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(8);
  for (auto [N, Fw] : {std::pair<int64_t, int64_t>{1, 1}, {77, 96}, {512, 1408}}) {
    HostTensor h = uniform(F, Shape{N, 2 * Fw}, rng, -4, 4), a = poisoned(F, Shape{N, Fw});
    DevTensor dh(h), da(a);
    cpu().swiglu_fwd(h, a);
    gpu().swiglu_fwd(dh, da);
    NMOE_EXPECT_CLOSE(da.download(), a, kTol);
    HostTensor g = uniform(F, Shape{N, Fw}, rng), dh13 = poisoned(F, Shape{N, 2 * Fw});
    DevTensor dg(g), ddh(dh13);
    cpu().swiglu_bwd(g, h, dh13, Tensor());
    gpu().swiglu_bwd(dg, dh, ddh, Tensor());
    NMOE_EXPECT_CLOSE(ddh.download(), dh13, kTol);
    // Writing the activation again: swiglu_fwd's bits, the same gradient.
    DevTensor again(poisoned(F, Shape{N, Fw})), ddh_again(poisoned(F, Shape{N, 2 * Fw}));
    gpu().swiglu_bwd(dg, dh, ddh_again, again);
    NMOE_EXPECT_SAME(again.download(), da.download());
    NMOE_EXPECT_SAME(ddh_again.download(), ddh.download());
  }
}

}  // namespace
}  // namespace nmoe::gputest

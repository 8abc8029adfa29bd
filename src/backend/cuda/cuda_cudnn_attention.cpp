// cuDNN fused attention (SDPA) for BF16, through the cuDNN frontend graph API
// (third_party/cudnn_frontend, header-only). One graph per shape key
// (B, T, H, Dh, scale, forward/backward), built at first use and cached in the
// backend; each call binds the tensors' pointers and runs the graph on the
// backend's stream, with the workspace from the backend's Transient scratch.
//
// Layout (ops/op_checks.h): q, k, v and dq, dk, dv are [B, H, T, Dh] views of
// the packed [N = B*T, 3, H, Dh] rows (strides T*3*H*Dh, Dh, 3*H*Dh, 1; k and v
// start H*Dh and 2*H*Dh elements in), out and dout [B, H, T, Dh] views of
// [N, H*Dh]; no copies. cuDNN's softmax stats are max + log(sum(exp(s - max)))
// over the scaled, masked scores s = scale * q.k, natural log, [B, H, T, 1]:
// the interface's lse [B, H, T], written and read in place.
//
// Determinism: the forward pass has no atomics, and plans come from cuDNN's
// heuristics (mode A, first supported plan), never from timing, so a shape runs
// the same plan every time. The backward pass asks for cuDNN's deterministic
// algorithm: by default cuDNN accumulates dQ across key blocks with fp32
// atomics, whose order (and so the rounded sum) varies from run to run; the
// deterministic algorithm has a fixed reduction order. On Hopper it keeps dP in
// a BF16 workspace of B*H*T*T elements (1.5 GiB at B=16, T=2048, H=12), taken
// from the Transient scratch buffer; the backward therefore runs over slices of
// the batch (cudnn_attention_bwd_batch_slice), each sequence being independent.
#include "backend/cuda/cuda_cudnn_attention.h"

#include <atomic>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

#ifdef NMOE_HAVE_CUDNN
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

// The graph cache is ours; the frontend's JSON serialization is not needed.
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cudnn.h>
#include <cudnn_frontend.h>
#endif

namespace nmoe {

#ifdef NMOE_HAVE_CUDNN
namespace fe = cudnn_frontend;

struct CudnnAttention {
  struct Key {
    int64_t B, T, H, Dh;
    uint32_t scale_bits;
    bool backward;
    auto operator<=>(const Key&) const = default;
  };
  struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN rejected the shape
    int64_t workspace = 0;                    // bytes
  };
  cudnnHandle_t handle = nullptr;
  std::map<Key, Plan> plans;

  ~CudnnAttention() {
    plans.clear();
    if (handle) cudnnDestroy(handle);
  }
};
#else
struct CudnnAttention {};
#endif

void CudnnAttentionDeleter::operator()(CudnnAttention* p) const { delete p; }

namespace cuda {

namespace {

std::atomic<int64_t> g_runs[2];

// Prints line() to stderr the first time only.
template <class Line>
void note_once(std::atomic<bool>& printed, Line&& line) {
  if (!printed.load(std::memory_order_relaxed) && !printed.exchange(true))
    std::fprintf(stderr, "%s\n", std::string(line()).c_str());
}

#ifdef NMOE_HAVE_CUDNN

std::string version_string(size_t v) {  // cuDNN 9: major * 10000 + minor * 100 + patch
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." +
         std::to_string(v % 100);
}

constexpr const char* kHint = "; NMOE_ATTN=flash selects the flash kernels instead";

void cudnn_check(const char* op, const char* call, cudnnStatus_t status) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char msg[512] = {};
  cudnnGetLastErrorString(msg, sizeof(msg));
  fail("cuda ", op, ": ", call, " failed: ", cudnnGetErrorString(status),
       msg[0] ? std::string(" (") + msg + ")" : std::string(), kHint);
}

const char* code_name(fe::error_code_t code) {
  switch (code) {
    case fe::error_code_t::OK: return "OK";
    case fe::error_code_t::ATTRIBUTE_NOT_SET: return "ATTRIBUTE_NOT_SET";
    case fe::error_code_t::SHAPE_DEDUCTION_FAILED: return "SHAPE_DEDUCTION_FAILED";
    case fe::error_code_t::INVALID_TENSOR_NAME: return "INVALID_TENSOR_NAME";
    case fe::error_code_t::INVALID_VARIANT_PACK: return "INVALID_VARIANT_PACK";
    case fe::error_code_t::GRAPH_NOT_SUPPORTED: return "GRAPH_NOT_SUPPORTED";
    case fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED:
      return "GRAPH_EXECUTION_PLAN_CREATION_FAILED";
    case fe::error_code_t::GRAPH_EXECUTION_FAILED: return "GRAPH_EXECUTION_FAILED";
    case fe::error_code_t::HEURISTIC_QUERY_FAILED: return "HEURISTIC_QUERY_FAILED";
    case fe::error_code_t::UNSUPPORTED_GRAPH_FORMAT: return "UNSUPPORTED_GRAPH_FORMAT";
    case fe::error_code_t::CUDA_API_FAILED: return "CUDA_API_FAILED";
    case fe::error_code_t::CUDNN_BACKEND_API_FAILED: return "CUDNN_BACKEND_API_FAILED";
    case fe::error_code_t::INVALID_CUDA_DEVICE: return "INVALID_CUDA_DEVICE";
    case fe::error_code_t::HANDLE_ERROR: return "HANDLE_ERROR";
    case fe::error_code_t::INVALID_VALUE: return "INVALID_VALUE";
  }
  return "unknown";
}

std::string shape_string(const CudnnAttention::Key& k) {
  return "B=" + std::to_string(k.B) + " T=" + std::to_string(k.T) + " H=" + std::to_string(k.H) +
         " Dh=" + std::to_string(k.Dh);
}

// Tensor uids of the graphs.
enum Uid : fe::graph::Tensor_attributes::uid_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV };

struct Views {
  std::vector<int64_t> dims, qkv_stride, o_stride, stats_dims, stats_stride;
};

Views views(const CudnnAttention::Key& k) {
  const int64_t row = 3 * k.H * k.Dh;  // one token of packed qkv
  return {{k.B, k.H, k.T, k.Dh},
          {k.T * row, k.Dh, row, 1},
          {k.T * k.H * k.Dh, k.Dh, k.H * k.Dh, 1},
          {k.B, k.H, k.T, 1},
          {k.H * k.T, k.T, 1, 1}};
}

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name,
                                                    Uid uid, const std::vector<int64_t>& dims,
                                                    const std::vector<int64_t>& stride) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(
      stride));
}

void set_common(fe::graph::Graph& g) {
  g.set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
}

// Causal mask with the diagonal at the top left: query t sees keys 0..t.
template <class Attributes>
void set_causal(Attributes& a) {
  a.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
}

void define_fwd(fe::graph::Graph& g, const CudnnAttention::Key& k) {
  const Views v = views(k);
  set_common(g);
  auto Q = input(g, "Q", kQ, v.dims, v.qkv_stride);
  auto K = input(g, "K", kK, v.dims, v.qkv_stride);
  auto V = input(g, "V", kV, v.dims, v.qkv_stride);
  fe::graph::SDPA_attributes a;
  a.set_name("nmoe_attention_fwd").set_generate_stats(true).set_attn_scale(std::bit_cast<float>(k.scale_bits));
  set_causal(a);
  auto [O, Stats] = g.sdpa(Q, K, V, a);
  O->set_output(true).set_uid(kO).set_dim(v.dims).set_stride(v.o_stride);
  Stats->set_output(true)
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim(v.stats_dims)
      .set_stride(v.stats_stride);
}

void define_bwd(fe::graph::Graph& g, const CudnnAttention::Key& k) {
  const Views v = views(k);
  set_common(g);
  auto Q = input(g, "Q", kQ, v.dims, v.qkv_stride);
  auto K = input(g, "K", kK, v.dims, v.qkv_stride);
  auto V = input(g, "V", kV, v.dims, v.qkv_stride);
  auto O = input(g, "O", kO, v.dims, v.o_stride);
  auto dO = input(g, "dO", kdO, v.dims, v.o_stride);
  auto Stats = input(g, "Stats", kStats, v.stats_dims, v.stats_stride);
  Stats->set_data_type(fe::DataType_t::FLOAT);
  fe::graph::SDPA_backward_attributes a;
  // Deterministic: see the top of this file.
  a.set_name("nmoe_attention_bwd")
      .set_attn_scale(std::bit_cast<float>(k.scale_bits))
      .set_deterministic_algorithm(true);
  set_causal(a);
  auto [dQ, dK, dV] = g.sdpa_backward(Q, K, V, O, dO, Stats, a);
  dQ->set_output(true).set_uid(kdQ).set_dim(v.dims).set_stride(v.qkv_stride);
  dK->set_output(true).set_uid(kdK).set_dim(v.dims).set_stride(v.qkv_stride);
  dV->set_output(true).set_uid(kdV).set_dim(v.dims).set_stride(v.qkv_stride);
}

CudnnAttention& state(CudaBackend& be, const char* op) {
  auto& s = be.cudnn_attention();
  if (!s) {
    std::unique_ptr<CudnnAttention, CudnnAttentionDeleter> fresh(new CudnnAttention);
    cudnn_check(op, "cudnnCreate", cudnnCreate(&fresh->handle));
    cudnn_check(op, "cudnnSetStream", cudnnSetStream(fresh->handle, be.stream()));
    s = std::move(fresh);
  }
  return *s;
}

// Builds (or finds) the graph of a shape. A graph cuDNN rejects while it is
// checked and built is remembered as rejected, with a note on stderr.
const CudnnAttention::Plan& plan_for(CudnnAttention& s, const CudnnAttention::Key& k,
                                     const char* op) {
  if (auto it = s.plans.find(k); it != s.plans.end()) return it->second;
  auto g = std::make_shared<fe::graph::Graph>();
  const char* stage = nullptr;
  fe::error_t err;
  const auto step = [&](const char* name, fe::error_t e) {
    if (e.is_good()) return true;
    stage = name;
    err = std::move(e);
    return false;
  };
  try {
    if (k.backward) define_bwd(*g, k);
    else define_fwd(*g, k);
    (void)(step("validate", g->validate()) &&
           step("build_operation_graph", g->build_operation_graph(s.handle)) &&
           step("create_execution_plans", g->create_execution_plans({fe::HeurMode_t::A})) &&
           step("check_support", g->check_support()) &&
           step("build_plans", g->build_plans(fe::BuildPlanPolicy_t::HEURISTICS_CHOICE)));
  } catch (const std::exception& e) {
    stage = "graph definition";
    err = fe::error_t(fe::error_code_t::GRAPH_NOT_SUPPORTED, e.what());
  }
  CudnnAttention::Plan plan;
  if (stage) {
    // Errors of the device or the handle are not a property of the shape.
    const fe::error_code_t c = err.code;
    if (c == fe::error_code_t::CUDA_API_FAILED || c == fe::error_code_t::HANDLE_ERROR ||
        c == fe::error_code_t::INVALID_CUDA_DEVICE)
      fail("cuda ", op, ": cuDNN SDPA graph ", stage, " failed for ", shape_string(k), ": ",
           code_name(c), " (", err.err_msg, ")", kHint);
    std::fprintf(stderr, "nmoe: %s: cuDNN rejects %s at %s (%s: %s); the flash kernels run it\n",
                 op, shape_string(k).c_str(), stage, code_name(c), err.err_msg.c_str());
  } else {
    const fe::error_t e = g->get_workspace_size(plan.workspace);
    if (e.is_bad())
      fail("cuda ", op, ": cuDNN SDPA get_workspace_size failed for ", shape_string(k), ": ",
           code_name(e.code), " (", e.err_msg, ")", kHint);
    plan.graph = std::move(g);
    if (plan.workspace > (int64_t(256) << 20))
      std::fprintf(stderr, "nmoe: %s: cuDNN workspace %lld MiB for %s\n", op,
                   static_cast<long long>(plan.workspace >> 20), shape_string(k).c_str());
  }
  return s.plans.emplace(k, std::move(plan)).first->second;
}

void execute(CudaBackend& be, CudnnAttention& s, const CudnnAttention::Plan& plan,
             const CudnnAttention::Key& k, std::unordered_map<int64_t, void*>& pack,
             const char* op) {
  void* ws = plan.workspace > 0
                 ? be.scratch(CudaBackend::Scratch::Transient, static_cast<size_t>(plan.workspace))
                 : nullptr;
  const fe::error_t e = plan.graph->execute(s.handle, pack, ws);
  if (e.is_bad())
    fail("cuda ", op, ": cuDNN SDPA execute failed for ", shape_string(k), ": ", code_name(e.code),
         " (", e.err_msg, ")", kHint);
}

CudnnAttention::Key key_of(const ops::QkvLayout& L, float scale, bool backward) {
  return {L.B, L.T, L.H, L.Dh, std::bit_cast<uint32_t>(scale), backward};
}

// cuDNN wants 16-byte aligned tensors (whole allocations always are).
bool aligned(const char* op, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      static std::atomic<bool> printed{false};
      note_once(printed, [&] {
        return std::string("nmoe: ") + op +
               ": a tensor is not 16-byte aligned; the flash kernels run it";
      });
      return false;
    }
  }
  return true;
}

// The tensor `elements` BF16 elements past p (k and v inside a packed qkv row).
void* at(const void* p, int64_t elements) {
  return const_cast<char*>(static_cast<const char*>(p)) + elements * 2;
}

#endif  // NMOE_HAVE_CUDNN

}  // namespace

bool cudnn_attention_built() {
#ifdef NMOE_HAVE_CUDNN
  return true;
#else
  return false;
#endif
}

bool cudnn_attention_selected(const char* op, int64_t Dh) {
  static std::atomic<bool> flash_note{false}, cudnn_note{false}, dh_note{false};
  const char* env = std::getenv("NMOE_ATTN");
  const std::string_view want = env && *env ? env : "cudnn";
  if (want == "flash") {
    note_once(flash_note, [] { return "nmoe: attention: the flash kernels (NMOE_ATTN=flash)"; });
    return false;
  }
  NMOE_CHECK(want == "cudnn", op, ": NMOE_ATTN must be cudnn or flash; got '", want, "'");
#ifdef NMOE_HAVE_CUDNN
  if (Dh % 8 != 0 || Dh > 128) {
    note_once(dh_note, [&] {
      return "nmoe: attention: the flash kernels for head dim " + std::to_string(Dh) +
             " (the cuDNN path takes multiples of 8 up to 128)";
    });
    return false;
  }
  note_once(cudnn_note, [] {
    return "nmoe: attention: cuDNN SDPA (cuDNN runtime " + version_string(cudnnGetVersion()) +
           ", built with " + version_string(CUDNN_VERSION) + ", cudnn-frontend " +
           std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) + "." +
           std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
           std::to_string(CUDNN_FRONTEND_PATCH_VERSION) + ")";
  });
  return true;
#else
  note_once(cudnn_note, [] { return "nmoe: attention: the flash kernels (this build has no cuDNN)"; });
  return false;
#endif
}

#ifdef NMOE_HAVE_CUDNN

bool cudnn_attention_fwd(CudaBackend& be, const ops::QkvLayout& L, const void* qkv, void* out,
                         float* lse, float scale) {
  const char* op = "attention_fwd";
  if (!aligned(op, {qkv, out, lse})) return false;
  CudnnAttention& s = state(be, op);
  const CudnnAttention::Key k = key_of(L, scale, false);
  const CudnnAttention::Plan& plan = plan_for(s, k, op);
  if (!plan.graph) return false;
  const int64_t hd = L.H * L.Dh;
  std::unordered_map<int64_t, void*> pack = {
      {kQ, at(qkv, 0)}, {kK, at(qkv, hd)}, {kV, at(qkv, 2 * hd)}, {kO, out}, {kStats, lse}};
  execute(be, s, plan, k, pack, op);
  g_runs[0].fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool cudnn_attention_bwd(CudaBackend& be, const ops::QkvLayout& L, const void* dout,
                         const void* qkv, const void* out, const float* lse, void* dqkv,
                         float scale) {
  const char* op = "attention_bwd";
  if (!aligned(op, {dout, qkv, out, lse, dqkv})) return false;
  CudnnAttention& s = state(be, op);
  ops::QkvLayout slice = L;
  slice.B = cudnn_attention_bwd_batch_slice(L.B, L.T, L.H);
  const CudnnAttention::Key k = key_of(slice, scale, true);
  const CudnnAttention::Plan& plan = plan_for(s, k, op);
  if (!plan.graph) return false;
  const int64_t hd = L.H * L.Dh;
  // Per sequence: T rows of packed qkv (3*hd) and of out (hd); H*T statistics.
  const int64_t qkv_seq = L.T * 3 * hd, out_seq = L.T * hd, lse_seq = L.H * L.T;
  for (int64_t b = 0; b < L.B; b += slice.B) {
    const int64_t q0 = b * qkv_seq, o0 = b * out_seq;
    std::unordered_map<int64_t, void*> pack = {
        {kQ, at(qkv, q0)},   {kK, at(qkv, q0 + hd)},   {kV, at(qkv, q0 + 2 * hd)},
        {kO, at(out, o0)},   {kdO, at(dout, o0)},      {kStats, const_cast<float*>(lse) + b * lse_seq},
        {kdQ, at(dqkv, q0)}, {kdK, at(dqkv, q0 + hd)}, {kdV, at(dqkv, q0 + 2 * hd)}};
    execute(be, s, plan, k, pack, op);
  }
  g_runs[1].fetch_add(1, std::memory_order_relaxed);
  return true;
}

#else

bool cudnn_attention_fwd(CudaBackend&, const ops::QkvLayout&, const void*, void*, float*, float) {
  return false;
}
bool cudnn_attention_bwd(CudaBackend&, const ops::QkvLayout&, const void*, const void*,
                         const void*, const float*, void*, float) {
  return false;
}

#endif  // NMOE_HAVE_CUDNN

int64_t cudnn_attention_runs(bool backward) { return g_runs[backward ? 1 : 0].load(); }

int64_t cudnn_attention_bwd_batch_slice(int64_t B, int64_t T, int64_t H) {
  constexpr int64_t kCap = int64_t(2) << 30;
  // A slice's statistics start b*H*T floats in: 16-byte aligned only when H*T % 4 == 0.
  if ((H * T) % 4 != 0) return B;
  const int64_t per_sequence = H * T * T * 2;
  int64_t best = 1;
  for (int64_t s = 2; s <= B; ++s)
    if (B % s == 0 && s * per_sequence <= kCap) best = s;
  return best;
}

}  // namespace cuda
}  // namespace nmoe

// NCCL through dlopen: the few entry points the dense collectives use,
// declared here with NCCL's stable C ABI (enum values and the 128-byte id).
#include "backend/cuda/cuda_nccl_comm.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>
#include <type_traits>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"
#include "dist/abort.h"
#include "dist/rendezvous.h"

namespace nmoe {

namespace {

using ncclResult_t = int;
constexpr ncclResult_t kNcclSuccess = 0, kNcclInProgress = 7;
using ncclComm_t = struct ncclComm*;
struct NcclUniqueId {
  char internal[128];
};
// ncclDataType_t / ncclRedOp_t values.
constexpr int kNcclInt8 = 0, kNcclInt32 = 2, kNcclFloat32 = 7, kNcclFloat64 = 8, kNcclSum = 0;

struct Nccl {
  ncclResult_t (*GetVersion)(int*);
  ncclResult_t (*GetUniqueId)(NcclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, NcclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*);
  const char* (*GetErrorString)(ncclResult_t);
  ncclResult_t (*AllReduce)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Broadcast)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*GroupStart)();
  ncclResult_t (*GroupEnd)();
  std::string error;  // why loading failed
};

const Nccl& nccl() {
  static const Nccl lib = [] {
    Nccl n{};
    const char* env = std::getenv("NMOE_NCCL_LIB");
    const std::string file = env && *env ? env : "libnccl.so.2";
    void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* why = dlerror();
      n.error = "cannot load " + file + " (" + (why ? why : "dlopen failed") + ")";
      return n;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && n.error.empty()) n.error = file + " has no " + name;
    };
    sym(n.GetVersion, "ncclGetVersion");
    sym(n.GetUniqueId, "ncclGetUniqueId");
    sym(n.CommInitRank, "ncclCommInitRank");
    sym(n.CommDestroy, "ncclCommDestroy");
    sym(n.CommAbort, "ncclCommAbort");
    sym(n.CommGetAsyncError, "ncclCommGetAsyncError");
    sym(n.GetErrorString, "ncclGetErrorString");
    sym(n.AllReduce, "ncclAllReduce");
    sym(n.Broadcast, "ncclBroadcast");
    sym(n.GroupStart, "ncclGroupStart");
    sym(n.GroupEnd, "ncclGroupEnd");
    return n;
  }();
  return lib;
}

void check_nccl(ncclResult_t r, const std::string& what) {
  if (r == kNcclSuccess || r == kNcclInProgress) return;
  fail(what, ": NCCL error ", r, " (", nccl().GetErrorString(r), "); NCCL_DEBUG=WARN prints NCCL's own reason");
}

class NcclComm final : public Comm {
 public:
  NcclComm(CudaBackend& backend, Rendezvous& rdv) : Comm(rdv), backend_(backend), timeout_s_(rdv.timeout()) {
    const Nccl& n = nccl();
    NcclUniqueId id{};
    if (rank_ == 0) check_nccl(n.GetUniqueId(&id), "NCCL setup");
    const std::string all = rdv.broadcast(std::string(id.internal, sizeof id.internal));
    NMOE_CHECK(all.size() == sizeof id.internal, "NCCL setup: malformed id from rank 0");
    std::memcpy(id.internal, all.data(), sizeof id.internal);
    check_nccl(n.CommInitRank(&comm_, world_, id, rank_), "NCCL setup (ncclCommInitRank)");
  }
  ~NcclComm() override {
    if (!comm_) return;  // never made, or aborted
    // A failed run aborts: destroying waits for the peers' pending work.
    if (std::uncaught_exceptions() > 0 || dist_failed())
      nccl().CommAbort(comm_);
    else
      nccl().CommDestroy(comm_);
  }

  using Comm::all_gather;

  void all_reduce_sum(const Tensor& t, const std::string& what) override {
    if (t.numel() == 0) return;
    int dt = 0;
    switch (t.dtype) {
      case DType::F32: dt = kNcclFloat32; break;
      case DType::F64: dt = kNcclFloat64; break;
      case DType::I32: dt = kNcclInt32; break;
      default: fail(what, ": all_reduce_sum does not support ", dtype_name(t.dtype));
    }
    check_usable(what);
    check_nccl(nccl().AllReduce(t.data, t.data, static_cast<size_t>(t.numel()), dt, kNcclSum, comm_,
                                backend_.stream()),
               what);
    wait(what);
  }

  // Rank r's slice is broadcast from r, all slices in one NCCL group (the
  // slices may differ in length, which ncclAllGather does not allow).
  void all_gather(const Tensor& t, const std::vector<int64_t>& bounds, const std::string& what) override {
    const int W = world_;
    check_gather_bounds(t, bounds, what);
    const size_t es = dtype_size(t.dtype);
    char* data = t.ptr<char>();
    const Nccl& n = nccl();
    check_usable(what);
    check_nccl(n.GroupStart(), what);
    ncclResult_t r = kNcclSuccess;
    for (int root = 0; root < W && (r == kNcclSuccess || r == kNcclInProgress); ++root) {
      const int64_t len = bounds[root + 1] - bounds[root];
      char* p = data + bounds[root] * es;
      if (len > 0) r = n.Broadcast(p, p, static_cast<size_t>(len) * es, kNcclInt8, root, comm_, backend_.stream());
    }
    const ncclResult_t end = n.GroupEnd();  // closes the group even when a call failed
    check_nccl(r, what);
    check_nccl(end, what);
    wait(what);
  }

 private:
  // Polls the stream so that a failed peer or a stuck collective becomes an
  // error (aborting the communicator) instead of a hang.
  void wait(const std::string& what) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaStreamQuery(backend_.stream());
      if (e == cudaSuccess) break;
      NMOE_CHECK(e == cudaErrorNotReady, what, ": CUDA error ", cudaGetErrorString(e));
      ncclResult_t async = kNcclSuccess;
      nccl().CommGetAsyncError(comm_, &async);
      if (async != kNcclSuccess && async != kNcclInProgress) abort_with(what, "NCCL reported an error");
      if (dist_failed()) abort_with(what, "stopped because " + dist_failure_message());
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_s_)
        abort_with(what, "waited " + std::to_string(static_cast<int>(timeout_s_)) +
                             " s for the other ranks (NMOE_DIST_TIMEOUT_S); the ranks have diverged or one is stuck");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    backend_.synchronize();  // raises device errors of the work before
  }
  void check_usable(const std::string& what) const {
    NMOE_CHECK(comm_ != nullptr, what, ": the NCCL communicator was aborted after an earlier failure");
  }
  [[noreturn]] void abort_with(const std::string& what, const std::string& why) {
    nccl().CommAbort(comm_);
    comm_ = nullptr;
    set_dist_failure(what + ": " + why);
    fail(what, ": ", why);
  }

  CudaBackend& backend_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::string nccl_load_error() { return nccl().error; }

std::string nccl_version_string() {
  const Nccl& n = nccl();
  if (!n.error.empty()) return "NCCL (not loaded)";
  int v = 0;
  n.GetVersion(&v);
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

std::unique_ptr<Comm> make_nccl_comm(Backend& backend, Rendezvous& rdv) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  NMOE_CHECK(cuda != nullptr, "NCCL collectives need the CUDA backend");
  const std::string missing = nccl_load_error();
  NMOE_CHECK(missing.empty(), "NCCL: ", missing);
  return std::make_unique<NcclComm>(*cuda, rdv);
}

}  // namespace nmoe

// CudaBackend lifecycle, memory, copies, synchronization and error reporting.
#include <cstdio>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace cuda {

[[noreturn]] void cuda_fail(const char* op, const char* file, int line, const char* call,
                            cudaError_t err) {
  fail("cuda ", op, ": ", call, " failed at ", file, ":", line, ": ", cudaGetErrorName(err), " (",
       cudaGetErrorString(err), ")");
}

[[noreturn]] void cublas_fail(const char* op, const char* file, int line, const char* call,
                              cublasStatus_t status) {
  fail("cuda ", op, ": ", call, " failed at ", file, ":", line, ": ", cublasGetStatusName(status),
       " (", cublasGetStatusString(status), ")");
}

const char* device_error_message(int code) {
  switch (code) {
    case kErrTokenRange: return "a token id is outside the vocabulary [0, V)";
    case kErrExpertRange: return "an expert id is outside [0, E)";
    case kErrExpertRepeated: return "an expert appears twice in one row of the given indices";
    case kErrPosRange: return "a row of pos is outside [0, N*K); pos must be a permutation";
    case kErrTargetRange: return "a target id is not below the vocab size";
    case kErrNegativeCount: return "an expert count is negative";
    case kErrOffsets:
      return "grouped GEMM offsets must start at 0, be non-decreasing and end at the number of rows";
    default: return "unknown device error";
  }
}

}  // namespace cuda

namespace {
constexpr size_t kCublasWorkspace = 32u << 20;  // fixed: cuBLAS results depend on it
}

CudaBackend::CudaBackend(int device) : device_(device) {
  const char* op = "backend init";
  NMOE_CUDA_CHECK(op, cudaSetDevice(device));
  // The main stream takes the highest priority, so side work (lowest) only
  // fills the multiprocessors the main stream's blocks leave free.
  int least = 0, greatest = 0;
  NMOE_CUDA_CHECK(op, cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t s = nullptr;
  NMOE_CUDA_CHECK(op, cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, greatest));
  stream_ = main_stream_ = s;
  cublasHandle_t h = nullptr;
  NMOE_CUBLAS_CHECK(op, cublasCreate(&h));
  cublas_ = h;
  NMOE_CUBLAS_CHECK(op, cublasSetStream(h, s));
  NMOE_CUDA_CHECK(op, cudaMalloc(&cublas_workspace_, kCublasWorkspace));
  NMOE_CUBLAS_CHECK(op, cublasSetWorkspace(h, cublas_workspace_, kCublasWorkspace));
  // Default math (no TF32 unless asked); F32 GEMMs also use the pedantic
  // compute type so NVIDIA_TF32_OVERRIDE cannot change them. Atomics stay off.
  NMOE_CUBLAS_CHECK(op, cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  NMOE_CUBLAS_CHECK(op, cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
  NMOE_CUBLAS_CHECK(op, cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  NMOE_CUDA_CHECK(op, cudaMalloc(&err_dev_, sizeof(int)));
  NMOE_CUDA_CHECK(op, cudaMemset(err_dev_, 0, sizeof(int)));
  NMOE_CUDA_CHECK(op, cudaMallocHost(&err_host_, sizeof(int)));
  *err_host_ = 0;
}

CudaBackend::~CudaBackend() {
  // Never throws: errors at teardown are printed.
  cudaSetDevice(device_);
  if (main_stream_) cudaStreamSynchronize(main_stream_);
  if (side_stream_) cudaStreamSynchronize(side_stream_);
  for (Buffer& b : scratch_)
    if (b.p) cudaFree(b.p);
  if (offsets_host_) cudaFreeHost(offsets_host_);
  if (err_host_) cudaFreeHost(err_host_);
  if (err_dev_) cudaFree(err_dev_);
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_workspace_) cudaFree(cublas_workspace_);
  if (fork_event_) cudaEventDestroy(fork_event_);
  if (join_event_) cudaEventDestroy(join_event_);
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (main_stream_) cudaStreamDestroy(main_stream_);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    std::fprintf(stderr, "cuda backend teardown: %s (%s)\n", cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

const char* CudaBackend::name() const { return "cuda"; }

int64_t CudaBackend::device_memory_in_use() const {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return -1;
  return static_cast<int64_t>(total_b - free_b);
}

std::string CudaBackend::device_name() const {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "cuda";
  return prop.name;
}

void* CudaBackend::alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));  // 256-byte aligned
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of a failed allocation
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("cuda alloc: cannot allocate ", bytes, " bytes on device ", device_, " (",
         cudaGetErrorString(e), "; ", free_b, " of ", total_b, " bytes free)");
  }
  return p;
}

// Called from destructors (Arena): reports instead of throwing.
void CudaBackend::free(void* p) {
  if (!p) return;
  const cudaError_t e = cudaFree(p);  // waits for the device
  if (e != cudaSuccess)
    std::fprintf(stderr, "cuda free: %s (%s)\n", cudaGetErrorName(e), cudaGetErrorString(e));
}

void* CudaBackend::scratch(Scratch slot, size_t bytes) {
  main_stream_only("an op that needs scratch memory");  // the buffers belong to the main stream's ops
  Buffer& b = scratch_[static_cast<int>(slot)];
  if (bytes > b.bytes) {
    // Grows once to the largest size asked for; cudaFree waits for pending work.
    if (b.p) NMOE_CUDA_CHECK("scratch", cudaFree(b.p));
    b.p = nullptr;
    b.bytes = 0;
    b.p = alloc(bytes);
    b.bytes = bytes;
  }
  return b.p;
}

const int32_t* CudaBackend::offsets_to_host(const Tensor& offsets, const char* op) {
  const size_t n = static_cast<size_t>(offsets.numel());
  if (n > offsets_host_cap_) {
    if (offsets_host_) NMOE_CUDA_CHECK(op, cudaFreeHost(offsets_host_));
    offsets_host_ = nullptr;
    offsets_host_cap_ = 0;
    NMOE_CUDA_CHECK(op, cudaMallocHost(&offsets_host_, n * sizeof(int32_t)));
    offsets_host_cap_ = n;
  }
  NMOE_CUDA_CHECK(op, cudaMemcpyAsync(offsets_host_, offsets.data, n * sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
  check_device_errors(op);  // waits; offsets made by a failed moe_plan are not used
  return offsets_host_;
}

void CudaBackend::check_device_errors(const char* op) {
  NMOE_CUDA_CHECK(op, cudaMemcpyAsync(err_host_, err_dev_, sizeof(int), cudaMemcpyDeviceToHost,
                                      stream_));
  NMOE_CUDA_CHECK(op, cudaStreamSynchronize(stream_));
  const int code = *err_host_;
  if (code != kErrNone) {
    *err_host_ = 0;
    NMOE_CUDA_CHECK(op, cudaMemsetAsync(err_dev_, 0, sizeof(int), stream_));
    NMOE_CUDA_CHECK(op, cudaStreamSynchronize(stream_));
    fail("cuda backend: an op before ", op, " found bad input on the device: ",
         device_error_message(code));
  }
}

void CudaBackend::copy_from_host(const Tensor& dst, const void* src) {
  const char* op = "copy_from_host";
  check_data(op, "dst", dst);
  NMOE_CHECK(src != nullptr || dst.nbytes() == 0, op, ": source pointer is null");
  // From pageable memory the call returns once src has been staged, so the
  // caller may reuse src right away.
  if (dst.nbytes() > 0)
    NMOE_CUDA_CHECK(op, cudaMemcpyAsync(dst.data, src, dst.nbytes(), cudaMemcpyHostToDevice,
                                        stream_));
}

void CudaBackend::copy_to_host(void* dst, const Tensor& src) {
  const char* op = "copy_to_host";
  check_data(op, "src", src);
  NMOE_CHECK(dst != nullptr || src.nbytes() == 0, op, ": destination pointer is null");
  if (src.nbytes() > 0)
    NMOE_CUDA_CHECK(op, cudaMemcpyAsync(dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost,
                                        stream_));
  check_device_errors(op);
}

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  const char* op = "copy";
  NMOE_CHECK(dst.dtype == src.dtype, op, ": dtypes differ (dst ", dtype_name(dst.dtype), ", src ",
             dtype_name(src.dtype), ")");
  NMOE_CHECK(dst.numel() == src.numel(), op, ": element counts differ (dst ", dst.shape.str(),
             ", src ", src.shape.str(), ")");
  check_data(op, "dst", dst);
  check_data(op, "src", src);
  if (dst.nbytes() > 0 && dst.data != src.data)
    NMOE_CUDA_CHECK(op, cudaMemcpyAsync(dst.data, src.data, dst.nbytes(),
                                        cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::synchronize() { check_device_errors("synchronize"); }

void CudaBackend::main_stream_only(const char* what) const {
  NMOE_CHECK(!in_side_work_, "cuda backend: ", what, " was issued as side work; side work may only run "
             "elementwise ops without scratch memory (AdamW, fill, convert, copy)");
}

void CudaBackend::begin_side_work() {
  const char* op = "begin_side_work";
  NMOE_CHECK(!in_side_work_, op, ": side work has begun already");
  if (!side_stream_) {
    // The lowest priority: side blocks start only while the main stream has
    // none waiting (sharing the device at equal priority measured slower).
    int least = 0, greatest = 0;
    NMOE_CUDA_CHECK(op, cudaDeviceGetStreamPriorityRange(&least, &greatest));
    cudaStream_t s = nullptr;
    NMOE_CUDA_CHECK(op, cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, least));
    side_stream_ = s;
    cudaEvent_t e = nullptr;
    NMOE_CUDA_CHECK(op, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    fork_event_ = e;
    NMOE_CUDA_CHECK(op, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    join_event_ = e;
  }
  NMOE_CUDA_CHECK(op, cudaEventRecord(fork_event_, main_stream_));
  NMOE_CUDA_CHECK(op, cudaStreamWaitEvent(side_stream_, fork_event_, 0));
  stream_ = side_stream_;
  in_side_work_ = true;
  side_pending_ = true;
}

void CudaBackend::end_side_work() {
  const char* op = "end_side_work";
  NMOE_CHECK(in_side_work_, op, ": no side work has begun");
  stream_ = main_stream_;
  in_side_work_ = false;
}

void CudaBackend::join_side_work() {
  const char* op = "join_side_work";
  NMOE_CHECK(!in_side_work_, op, ": side work has not ended");
  if (!side_pending_) return;
  NMOE_CUDA_CHECK(op, cudaEventRecord(join_event_, side_stream_));
  NMOE_CUDA_CHECK(op, cudaStreamWaitEvent(main_stream_, join_event_, 0));
  side_pending_ = false;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  NMOE_CHECK(cuda_device_available(), "cuda backend: no CUDA device is available");
  int count = 0;
  NMOE_CUDA_CHECK("backend init", cudaGetDeviceCount(&count));
  NMOE_CHECK(device >= 0 && device < count, "cuda backend: device ", device,
             " does not exist (", count, " devices)");
  return std::make_unique<CudaBackend>(device);
}

bool cuda_device_available() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear
    return false;
  }
  return count > 0;
}

}  // namespace nmoe

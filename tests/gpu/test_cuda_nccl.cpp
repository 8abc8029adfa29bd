// The NCCL collectives of the dense gradients on one rank: loading the
// library, creating the communicator through the rendezvous, and the calls
// (argument and dtype mapping, the stream wait) on values that must come out
// unchanged. Two ranks on one GPU cannot use NCCL; scripts/gpu-check.sh checks
// that such a run is refused with a clear error. Several GPUs run the rest.
#include <gtest/gtest.h>

#include "backend/cuda/cuda_nccl_comm.h"
#include "dist/rendezvous.h"
#include "gpu_test_util.h"
#include "test_util.h"

namespace nmoe {
namespace {

using gputest::DevTensor;
using gputest::gpu;

TEST(CudaNccl, OneRankCommunicatorRunsTheCollectives) {
  NMOE_SKIP_WITHOUT_CUDA();
  if (!nccl_load_error().empty())  // scripts/gpu-check.sh puts NCCL's lib directory on LD_LIBRARY_PATH
    GTEST_SKIP() << "NCCL not found: " << nccl_load_error();
  DistEnv env;  // one rank
  Rendezvous rdv(env);
  std::unique_ptr<Comm> comm = make_nccl_comm(gpu(), rdv);
  EXPECT_NE(nccl_version_string().find("NCCL 2."), std::string::npos) << nccl_version_string();

  std::mt19937_64 rng(7);
  for (DType dt : {DType::F32, DType::F64, DType::I32}) {
    const cputest::HostTensor h = cputest::uniform(dt, Shape{1000003}, rng, -1e6, 1e6);
    DevTensor d(h);
    comm->all_reduce_sum(d, "test all-reduce");
    EXPECT_TRUE(d.download().bytes_equal(h)) << dtype_name(dt);
  }
  const cputest::HostTensor h = cputest::uniform(DType::I32, Shape{4099}, rng, -1e6, 1e6);
  DevTensor d(h);
  comm->all_gather(d, {5, 4097}, "test all-gather");
  EXPECT_TRUE(d.download().bytes_equal(h));
  EXPECT_NE(test::error_of([&] { comm->all_gather(d, {0, 5000}, "test all-gather"); }).find("exceed"),
            std::string::npos);
}

}  // namespace
}  // namespace nmoe

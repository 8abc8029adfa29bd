// The choice of library for the dense collectives (NMOE_DENSE_COMM): NCCL
// only where it can run, peer memory otherwise, and errors that say what to
// change when NCCL is asked for where it cannot run.
#include <gtest/gtest.h>

#include "dist/dense_comm.h"
#include "test_util.h"

namespace nmoe {
namespace {

TEST(DenseComm, AutoTakesNcclOnlyWhenEveryRankHasItsOwnGpuAndTheLibraryLoads) {
  EXPECT_EQ(choose_dense_comm(nullptr, true, true, ""), DenseCommKind::Nccl);
  EXPECT_EQ(choose_dense_comm("", true, true, ""), DenseCommKind::Nccl);
  EXPECT_EQ(choose_dense_comm("auto", true, true, ""), DenseCommKind::Nccl);
  EXPECT_EQ(choose_dense_comm("auto", true, false, ""), DenseCommKind::Peer);
  EXPECT_EQ(choose_dense_comm("auto", true, true, "cannot load libnccl.so.2"), DenseCommKind::Peer);
  EXPECT_EQ(choose_dense_comm("auto", false, false, ""), DenseCommKind::Peer);
  EXPECT_EQ(choose_dense_comm("peer", true, true, ""), DenseCommKind::Peer);
  EXPECT_EQ(choose_dense_comm("nccl", true, true, ""), DenseCommKind::Nccl);
}

TEST(DenseComm, ForcedNcclWhereItCannotRunSaysWhatToChange) {
  auto err = [](const char* s, bool gpu, bool distinct, const std::string& missing) {
    return test::error_of([&] { choose_dense_comm(s, gpu, distinct, missing); });
  };
  test::expect_parts(err("nccl", false, false, ""), {"NMOE_DENSE_COMM=nccl", "CPU backend", "peer"});
  test::expect_parts(err("nccl", true, false, ""), {"two ranks on one GPU", "--devices", "NMOE_DENSE_COMM=peer"});
  test::expect_parts(err("nccl", true, true, "cannot load libnccl.so.2 (not found)"),
                     {"cannot load libnccl.so.2", "NMOE_NCCL_LIB", "NMOE_DENSE_COMM=peer"});
  test::expect_parts(err("mpi", true, true, ""), {"'mpi'", "auto, nccl or peer"});
}

}  // namespace
}  // namespace nmoe

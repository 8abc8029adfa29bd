#include "dist/dense_comm.h"

#include "core/env_choice.h"
#include "core/error.h"

namespace nmoe {

DenseCommKind choose_dense_comm(const char* setting, bool gpu, bool distinct_gpus, const std::string& nccl_missing) {
  const std::string s = checked_choice("NMOE_DENSE_COMM", setting, {"auto", "nccl", "peer"});
  if (s == "peer") return DenseCommKind::Peer;
  const bool possible = gpu && distinct_gpus && nccl_missing.empty();
  if (s == "auto") return possible ? DenseCommKind::Nccl : DenseCommKind::Peer;
  NMOE_CHECK(gpu, "NMOE_DENSE_COMM=nccl needs device = \"cuda\"; the CPU backend reduces through shared memory "
                  "(unset NMOE_DENSE_COMM or set it to peer)");
  NMOE_CHECK(distinct_gpus, "NMOE_DENSE_COMM=nccl: NCCL refuses two ranks on one GPU; give every rank a GPU of its "
                            "own (--devices) or set NMOE_DENSE_COMM=peer");
  NMOE_CHECK(nccl_missing.empty(), "NMOE_DENSE_COMM=nccl: ", nccl_missing,
             "; put libnccl.so.2 on LD_LIBRARY_PATH, name it with NMOE_NCCL_LIB, or set NMOE_DENSE_COMM=peer");
  return DenseCommKind::Nccl;
}

const char* dense_comm_name(DenseCommKind k) { return k == DenseCommKind::Nccl ? "NCCL" : "peer memory"; }

}  // namespace nmoe

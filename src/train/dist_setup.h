// Joining a multi-process run: the rendezvous (with its failure watchdog),
// the shared-memory group (barriers, headers), the peer memory that carries
// the MoE rows (host memory for the CPU backend, GPU memory mapped through
// CUDA IPC for the CUDA backend) and the dense collectives (NCCL when every
// rank has a GPU of its own, the peer memory otherwise: dist/dense_comm.h).
#pragma once

#include <memory>

#include "config/config.h"
#include "dist/comm.h"
#include "dist/dist_env.h"
#include "dist/expert_transport.h"
#include "dist/peer_memory.h"
#include "dist/rendezvous.h"
#include "dist/shm_group.h"
#include "model/model.h"

namespace nmoe {

struct DistContext {
  DistEnv env;
  std::unique_ptr<Rendezvous> rdv;
  std::unique_ptr<ShmGroup> shm;     // barrier flags and headers (host shared memory)
  std::unique_ptr<PeerMemory> peers;  // bulk rows and gradient chunks (backend memory)
  std::unique_ptr<Comm> comm;
  std::unique_ptr<ExpertTransport> transport;  // null without MoE layers
  int rank() const { return env.rank; }
  int world() const { return env.world; }
};

// Ranks on one machine share its cores: threads = 0 (all cores) becomes an
// equal share, so the OpenMP teams of the ranks do not oversubscribe the CPU.
void share_cores_between_ranks(Config& cfg, const DistEnv& env);

// Connects this process to the run described by env (world > 1) and sets up
// the transports for a model of cfg on backend with options mo.
std::unique_ptr<DistContext> join_run(const DistEnv& env, const Config& cfg, Backend& backend,
                                      const ModelOptions& mo);

}  // namespace nmoe

#include "train/dist_setup.h"

#include <algorithm>
#include <thread>

#include <cstdlib>
#include <iostream>
#include <string>

#include "core/error.h"
#include "dist/dense_comm.h"
#include "dist/peer_memory.h"
#if defined(NMOE_HAVE_CUDA) && __has_include("backend/cuda/cuda_peer_memory.h")
#include "backend/cuda/cuda_nccl_comm.h"
#include "backend/cuda/cuda_peer_memory.h"
#define NMOE_CUDA_PEERS 1
#endif

namespace nmoe {

namespace {

constexpr size_t kStagingBytes = size_t(8) << 20;  // all-reduce chunks: 2 x 4 MiB per rank

// The dense collectives: NCCL or peer memory (dist/dense_comm.h), the same
// choice on every rank (a rank that cannot load NCCL makes all of them use
// peer memory, or fail when NCCL is insisted on).
std::unique_ptr<Comm> make_dense_comm(DistContext& ctx, Backend& backend, bool gpu, size_t staging_offset) {
  Rendezvous& rdv = *ctx.rdv;
  const char* setting = std::getenv("NMOE_DENSE_COMM");
  DenseCommKind kind = DenseCommKind::Peer;
  std::string how = dense_comm_name(kind);
#ifdef NMOE_CUDA_PEERS
  if (gpu) {
    const bool distinct = ranks_on_distinct_gpus(rdv);
    std::string missing = nccl_load_error();
    if (rdv.all_reduce_max(missing.empty() ? 0 : 1) != 0 && missing.empty())
      missing = "another rank cannot load NCCL";
    kind = choose_dense_comm(setting, true, distinct, missing);
    if (kind == DenseCommKind::Nccl) how = nccl_version_string();
  }
#endif
  if (!gpu) kind = choose_dense_comm(setting, false, false, "");
  if (rdv.rank() == 0)
    std::cerr << "ranks: " << rdv.world() << ", dense gradients and parameters through " << how << "\n";
#ifdef NMOE_CUDA_PEERS
  if (kind == DenseCommKind::Nccl) return make_nccl_comm(backend, rdv);
#endif
  return make_peer_comm(rdv, *ctx.shm, *ctx.peers, staging_offset, kStagingBytes);
}

}  // namespace

void share_cores_between_ranks(Config& cfg, const DistEnv& env) {
  if (env.world <= 1 || cfg.threads != 0) return;
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  cfg.threads = std::max<int64_t>(1, cores / env.local_world);
}

std::unique_ptr<DistContext> join_run(const DistEnv& env, const Config& cfg, Backend& backend,
                                      const ModelOptions& mo) {
  NMOE_CHECK(env.world > 1, "join_run needs more than one rank");
  const bool gpu = std::string(backend.name()) == "cuda";
  auto ctx = std::make_unique<DistContext>();
  ctx->env = env;
  ctx->rdv = std::make_unique<Rendezvous>(env);
  ctx->rdv->start_watchdog();
  const ModelShape s = ModelShape::from_config(cfg);
  const bool moe = s.n_experts > 0 && s.n_moe_layers() > 0;
  const int64_t rows = mo.micro_batch * mo.seq_len * s.top_k, El = s.n_experts / env.world;
  const TransportSizes ts = moe ? transport_sizes(env.world, rows, s.dim, El, mo.act_dtype()) : TransportSizes{};
  const size_t bulk = ts.bulk + kStagingBytes;
  // Headers and barrier flags always live in host shared memory; the bulk
  // area too on the CPU, in GPU memory (CUDA IPC) on the GPU.
  Rendezvous* rdv = ctx->rdv.get();
  ctx->shm = std::make_unique<ShmGroup>(env.job_id, env.rank, env.world, ts.host + (gpu ? 0 : bulk),
                                        [rdv] { rdv->barrier(); });
  if (gpu) {
#ifdef NMOE_CUDA_PEERS
    ctx->peers = make_cuda_peer_memory(backend, *ctx->rdv, bulk);
#else
    fail("this build has no CUDA backend");
#endif
  } else {
    ctx->peers = make_host_peer_memory(*ctx->shm, ts.host, bulk);
  }
  ctx->comm = make_dense_comm(*ctx, backend, gpu, ts.bulk);
  if (moe)
    ctx->transport = make_peer_transport(backend, *ctx->shm, 0, *ctx->peers, 0, rows, s.dim, El, mo.act_dtype());
  return ctx;
}

}  // namespace nmoe

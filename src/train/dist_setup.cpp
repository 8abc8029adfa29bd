#include "train/dist_setup.h"

#include <string>

#include "core/error.h"

namespace nmoe {

namespace {
constexpr size_t kStagingBytes = size_t(8) << 20;  // all-reduce chunks: 2 x 4 MiB per rank
}

std::unique_ptr<DistContext> join_run(const DistEnv& env, const Config& cfg, const Backend& backend,
                                      const ModelOptions& mo) {
  NMOE_CHECK(env.world > 1, "join_run needs more than one rank");
  NMOE_CHECK(std::string(backend.name()) == "cpu",
             "training on several GPUs is not available in this build yet; run one process per config or ",
             "set device = \"cpu\"");
  auto ctx = std::make_unique<DistContext>();
  ctx->env = env;
  ctx->rdv = std::make_unique<Rendezvous>(env);
  ctx->rdv->start_watchdog();
  const ModelShape s = ModelShape::from_config(cfg);
  const bool moe = s.n_experts > 0 && s.n_moe_layers() > 0;
  const int64_t rows = mo.micro_batch * mo.seq_len * s.top_k;
  const DType act = mo.act_dtype();
  const size_t transport = moe ? shm_transport_bytes(env.world, rows, s.dim, s.n_experts / env.world, act) : 0;
  Rendezvous* rdv = ctx->rdv.get();
  ctx->shm = std::make_unique<ShmGroup>(env.job_id, env.rank, env.world, transport + kStagingBytes,
                                        [rdv] { rdv->barrier(); });
  ctx->comm = make_shm_comm(*ctx->rdv, *ctx->shm, transport, kStagingBytes);
  if (moe)
    ctx->transport = make_shm_transport(*ctx->shm, 0, rows, s.dim, s.n_experts / env.world, act);
  return ctx;
}

}  // namespace nmoe

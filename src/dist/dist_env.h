// Where this process sits in a multi-process run, from torchrun-style
// environment variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) plus NMOE_JOB_ID, which `n ... --nproc N` sets.
#pragma once

#include <map>
#include <string>

namespace nmoe {

struct DistEnv {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string job_id;     // the same on every rank of one run; safe in file and shm names
  bool launched = false;  // WORLD_SIZE was set: a launcher started this process
};

// Reads and validates the variables; WORLD_SIZE unset means a single process.
DistEnv dist_env_from_environment();
// The same from explicit variables (absent key = unset).
DistEnv parse_dist_env(const std::map<std::string, std::string>& vars);

}  // namespace nmoe

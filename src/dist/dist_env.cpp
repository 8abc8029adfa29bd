#include "dist/dist_env.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace nmoe {

namespace {

const char* const kVars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                             "MASTER_ADDR", "MASTER_PORT", "NMOE_JOB_ID"};

const std::string* find(const std::map<std::string, std::string>& vars, const std::string& key) {
  auto it = vars.find(key);
  return it == vars.end() ? nullptr : &it->second;
}

int parse_int(const std::map<std::string, std::string>& vars, const std::string& key, int fallback) {
  const std::string* v = find(vars, key);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v->c_str(), &end, 10);
  NMOE_CHECK(!v->empty() && *end == '\0' && errno == 0 && x >= -1000000000L && x <= 1000000000L,
             "environment variable ", key, "='", *v, "' is not an integer");
  return static_cast<int>(x);
}

bool job_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

}  // namespace

DistEnv parse_dist_env(const std::map<std::string, std::string>& vars) {
  DistEnv env;
  if (!find(vars, "WORLD_SIZE")) {
    NMOE_CHECK(parse_int(vars, "RANK", 0) == 0, "environment variable RANK is set but WORLD_SIZE is not: ",
               "set both (or neither, for a single process)");
    env.job_id = "single-" + std::to_string(::getpid());
    return env;
  }
  env.launched = true;
  env.world = parse_int(vars, "WORLD_SIZE", 1);
  NMOE_CHECK(env.world >= 1, "environment variable WORLD_SIZE=", env.world, " must be at least 1");
  NMOE_CHECK(env.world == 1 || find(vars, "RANK"), "environment variable RANK is not set but WORLD_SIZE=",
             env.world, ": every process needs its rank");
  env.rank = parse_int(vars, "RANK", 0);
  NMOE_CHECK(env.rank >= 0 && env.rank < env.world, "environment variable RANK=", env.rank,
             " is outside 0..", env.world - 1, " (WORLD_SIZE=", env.world, ")");
  env.local_world = parse_int(vars, "LOCAL_WORLD_SIZE", env.world);
  env.local_rank = parse_int(vars, "LOCAL_RANK", env.rank);
  NMOE_CHECK(env.local_world >= 1, "environment variable LOCAL_WORLD_SIZE=", env.local_world,
             " must be at least 1");
  NMOE_CHECK(env.local_rank >= 0 && env.local_rank < env.local_world, "environment variable LOCAL_RANK=",
             env.local_rank, " is outside 0..", env.local_world - 1, " (LOCAL_WORLD_SIZE=", env.local_world, ")");
  NMOE_CHECK(env.world % env.local_world == 0, "WORLD_SIZE=", env.world,
             " is not a multiple of LOCAL_WORLD_SIZE=", env.local_world);
  NMOE_CHECK(env.world == env.local_world, "WORLD_SIZE=", env.world, " spans several nodes (LOCAL_WORLD_SIZE=",
             env.local_world, "), but multi-node runs are not supported: run all ranks on one machine");

  if (const std::string* a = find(vars, "MASTER_ADDR")) {
    NMOE_CHECK(!a->empty(), "environment variable MASTER_ADDR is empty: set it to the address of rank 0");
    env.master_addr = *a;
  }
  NMOE_CHECK(env.world == 1 || find(vars, "MASTER_PORT"), "environment variable MASTER_PORT is not set but WORLD_SIZE=",
             env.world, ": set it to a free TCP port for the rendezvous");
  env.master_port = parse_int(vars, "MASTER_PORT", 0);
  NMOE_CHECK(env.world == 1 || (env.master_port >= 1 && env.master_port <= 65535),
             "environment variable MASTER_PORT=", env.master_port, " is not a TCP port (1..65535)");

  if (const std::string* id = find(vars, "NMOE_JOB_ID")) {
    NMOE_CHECK(!id->empty() && id->size() <= 64, "environment variable NMOE_JOB_ID must have 1 to 64 characters");
    for (char c : *id)
      NMOE_CHECK(job_id_char(c), "environment variable NMOE_JOB_ID='", *id,
                 "' may only contain letters, digits, '.', '_' and '-'");
    env.job_id = *id;
  } else {
    // Every rank sees the same address and port, so all derive the same id.
    std::string derived = "m" + env.master_addr + "-" + std::to_string(env.master_port);
    for (char& c : derived)
      if (!job_id_char(c)) c = '_';
    env.job_id = derived.substr(0, 64);
  }
  return env;
}

DistEnv dist_env_from_environment() {
  std::map<std::string, std::string> vars;
  for (const char* k : kVars)
    if (const char* v = std::getenv(k)) vars[k] = v;
  return parse_dist_env(vars);
}

}  // namespace nmoe

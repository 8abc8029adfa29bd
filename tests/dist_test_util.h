// Ranks of a run as threads of one test process.
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "dist/dist_env.h"

namespace nmoe::test {

// The environment of rank `rank` of `world` ranks meeting at 127.0.0.1:port.
inline DistEnv rank_env(int rank, int world, int port, const std::string& job) {
  DistEnv e;
  e.rank = rank;
  e.world = e.local_world = world;
  e.local_rank = rank;
  e.master_port = port;
  e.job_id = job;
  e.launched = true;
  return e;
}

// Runs fn(rank) on `world` threads; returns each one's error message ("" = none).
inline std::vector<std::string> on_threads(int world, const std::function<void(int)>& fn) {
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace nmoe::test

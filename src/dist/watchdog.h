// Failure detection for a multi-process run: one "watch" connection per peer
// (every rank to rank 0), separate from the connections collectives use. A
// connection that closes without a goodbye means that process died; rank 0
// passes every failure it learns of on to the other ranks, and every rank
// passes its own failure to rank 0, so all of them see dist_failed().
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "dist/tcp.h"

namespace nmoe {

class Watchdog {
 public:
  struct Link {
    int rank = 0;  // the process at the other end
    tcp::Socket socket;
  };
  explicit Watchdog(std::vector<Link> links);
  ~Watchdog() { shutdown(false); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Starts the background thread that watches the links.
  void start();
  // Stops the thread, then tells the peers this process is leaving: a goodbye
  // when clean and nothing failed, this process's failure message when one is
  // recorded, nothing otherwise (they will report it as an unexpected exit).
  void shutdown(bool clean);

 private:
  struct State {
    Link link;
    std::string inbox;
    bool said_bye = false;
  };
  void loop();
  void read_from(State& s);
  void send(State& s, char type, const std::string& payload);
  void pass_on_failure();

  std::vector<State> links_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  bool reported_ = false;
  bool shut_ = false;
};

}  // namespace nmoe

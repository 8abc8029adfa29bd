// The process-wide failure flag of a multi-process run. Set by the rendezvous
// watchdog when another rank dies (or by any code that gives up), polled by
// every loop that waits on other ranks.
#pragma once

#include <string>

namespace nmoe {

// Records the failure; the first message wins. Thread-safe.
void set_dist_failure(const std::string& msg);
// An atomic load: cheap enough for spin loops.
bool dist_failed();
// The first message, or "" when nothing failed.
std::string dist_failure_message();
// An int that becomes nonzero on failure, for paths that cannot call
// dist_failed() (a device kernel reading mapped host memory).
volatile int* dist_abort_word();
// Clears the flag (tests; a process that starts a new run).
void reset_dist_failure();

}  // namespace nmoe

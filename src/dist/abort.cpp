#include "dist/abort.h"

#include <atomic>
#include <mutex>

namespace nmoe {

namespace {

std::atomic<bool> g_failed{false};
alignas(4096) volatile int g_abort_word = 0;  // a page of its own: the GPU maps it

std::mutex& message_mutex() {
  static std::mutex m;
  return m;
}
std::string& message() {
  static std::string s;
  return s;
}

}  // namespace

void set_dist_failure(const std::string& msg) {
  std::lock_guard<std::mutex> lock(message_mutex());
  if (g_failed.load(std::memory_order_relaxed)) return;
  message() = msg;
  g_abort_word = 1;
  g_failed.store(true, std::memory_order_release);
}

bool dist_failed() { return g_failed.load(std::memory_order_acquire); }

std::string dist_failure_message() {
  std::lock_guard<std::mutex> lock(message_mutex());
  return message();
}

volatile int* dist_abort_word() { return &g_abort_word; }

void reset_dist_failure() {
  std::lock_guard<std::mutex> lock(message_mutex());
  message().clear();
  g_abort_word = 0;
  g_failed.store(false, std::memory_order_release);
}

}  // namespace nmoe

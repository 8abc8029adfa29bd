// Console output of a training run: the header (model, memory plan, data),
// one line per logged step, validation results and the final summary.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "config/config.h"

namespace nmoe {

class Model;
class DataLoader;
struct RouterStats;

class Progress {
 public:
  explicit Progress(std::ostream* os) : os_(os) {}
  void line(const std::string& s);
  void header(const Config& cfg, Model& model, const DataLoader& loader, const std::string& run_id);
  // steps_run: steps completed by this process (for the ETA).
  void step(int64_t s, int64_t total, double loss, double lr, double grad_norm, double tokens_per_s,
            double elapsed_s, double steps_run, const RouterStats* router);
  void validation(int64_t s, double loss, std::optional<double> target);
  void finish(const std::string& status, int64_t steps, double train_seconds);

 private:
  std::ostream* os_;
};

std::string format_duration(double seconds);  // H:MM:SS
std::string format_count(double x);           // 12.3K, 4.5M, 1.2B

}  // namespace nmoe

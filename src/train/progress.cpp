#include "train/progress.h"

#include <cmath>
#include <cstdio>
#include <ostream>

#include "data/loader.h"
#include "model/model.h"
#include "train/router_stats.h"

namespace nmoe {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-:--:--";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

std::string format_count(double x) {
  char buf[32];
  if (x >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", x / 1e9);
  else if (x >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", x / 1e6);
  else if (x >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", x / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", x);
  return buf;
}

void Progress::line(const std::string& s) {
  if (os_) *os_ << s << std::endl;
}

void Progress::header(const Config& cfg, Model& model, const DataLoader& loader, const std::string& run_id) {
  if (!os_) return;
  const ModelShape& s = model.shape();
  std::ostream& o = *os_;
  o << "nmoe train: run " << run_id << " (experiment " << cfg.experiment_id << ", preset " << cfg.preset << ")\n";
  o << "  config fingerprint " << cfg.fingerprint().substr(0, 16) << "\n";
  o << "  backend " << model.backend().name() << ", dtype " << dtype_name(model.options().dtype);
  if (model.params().split_grads())
    o << ", expert gradients " << dtype_name(model.params().grad_dtype(ParamGroup::Expert));
  o << "\n";
  o << "  model: dim " << s.dim << ", " << s.n_layers << " layers (" << s.n_dense_layers << " dense), " << s.n_heads
    << " heads of " << s.head_dim << ", vocab " << s.vocab;
  if (s.n_experts > 0)
    o << ", " << s.n_experts << " experts top-" << s.top_k << " + " << s.n_shared << " shared (width " << s.moe_inter
      << ")";
  o << "\n  parameters: " << format_count(static_cast<double>(model.params().count())) << " total, "
    << format_count(static_cast<double>(model.active_params())) << " active per token\n";
  o << "  batch: " << cfg.batch_size << " x " << cfg.seq_len << " tokens (" << model.options().micro_batch
    << " sequences per micro-batch), " << cfg.steps << " steps\n";
  o << "  data: " << loader.describe() << "\n";
  o << "memory plan:\n" << model.memory_plan().str() << std::flush;
}

void Progress::step(int64_t s, int64_t total, double loss, double lr, double grad_norm, double tps,
                    double elapsed, double steps_run, const RouterStats* router) {
  if (!os_) return;
  const double eta = steps_run > 0 ? elapsed / steps_run * static_cast<double>(total - s) : NAN;
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %s tok/s | %s | ETA %s",
                static_cast<long long>(s), static_cast<long long>(total), loss, lr, grad_norm,
                format_count(tps).c_str(), format_duration(elapsed).c_str(), format_duration(eta).c_str());
  *os_ << buf;
  if (router) {
    std::snprintf(buf, sizeof buf, " | router cv %.1f%% dead %lld bias [%.3f, %.3f]", router->cv,
                  static_cast<long long>(router->dead), router->bias_min, router->bias_max);
    *os_ << buf;
  }
  *os_ << std::endl;
}

void Progress::validation(int64_t s, double loss, std::optional<double> target) {
  if (!os_) return;
  char buf[128];
  std::snprintf(buf, sizeof buf, "validation at step %lld: loss %.4f", static_cast<long long>(s), loss);
  *os_ << buf;
  if (target) *os_ << (loss <= *target ? " (target " : " (target not yet reached: ") << *target << ")";
  *os_ << std::endl;
}

void Progress::finish(const std::string& status, int64_t steps, double train_seconds) {
  if (!os_) return;
  *os_ << "done: " << status << " after " << steps << " steps, " << format_duration(train_seconds)
       << " training time" << std::endl;
}

}  // namespace nmoe

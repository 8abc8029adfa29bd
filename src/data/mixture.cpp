#include "data/mixture.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <toml++/toml.h>

#include "core/error.h"

namespace nmoe {

MixtureSpec MixtureSpec::load(const std::string& path) {
  NMOE_CHECK(std::filesystem::is_regular_file(path), "mixture_toml '", path,
             "' does not exist or is not a file: set mixture_toml to a TOML file with [[source]] tables ",
             "(docs/data.md)");
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail("mixture '", path, "': TOML syntax error at line ", e.source().begin.line, ", column ",
         e.source().begin.column, ": ", e.description());
  }
  MixtureSpec spec;
  for (const auto& [key, node] : t) {
    if (key == "total_tokens") {
      auto v = node.value<int64_t>();
      NMOE_CHECK(v && *v >= 0, "mixture '", path, "': total_tokens must be a non-negative integer");
      spec.total_tokens = *v;
    } else if (key != "source") {
      fail("mixture '", path, "': unknown key '", key.str(), "' (valid: total_tokens, [[source]])");
    }
  }
  const toml::array* arr = t["source"].as_array();
  NMOE_CHECK(arr && !arr->empty(), "mixture '", path, "' has no [[source]] entries");
  std::set<std::string> names;
  for (const toml::node& n : *arr) {
    const toml::table* s = n.as_table();
    NMOE_CHECK(s, "mixture '", path, "': each source must be a [[source]] table");
    MixtureSource src;
    for (const auto& [key, v] : *s) {
      if (key == "name" && v.is_string()) src.name = *v.value<std::string>();
      else if (key == "path" && v.is_string()) src.path = *v.value<std::string>();
      else if (key == "weight" && (v.is_floating_point() || v.is_integer())) src.weight = *v.value<double>();
      else fail("mixture '", path, "': source key '", key.str(), "' is unknown or has the wrong type (name: string, ",
                "path: string, weight: number)");
    }
    NMOE_CHECK(!src.name.empty() && !src.path.empty(), "mixture '", path, "': every source needs name and path");
    NMOE_CHECK(std::isfinite(src.weight) && src.weight > 0, "mixture '", path, "': source '", src.name,
               "' needs weight > 0");
    NMOE_CHECK(names.insert(src.name).second, "mixture '", path, "': duplicate source name '", src.name, "'");
    spec.sources.push_back(src);
  }
  return spec;
}

std::vector<int64_t> mixture_quotas(const std::vector<int64_t>& w, int64_t total) {
  int64_t sum = 0;
  for (int64_t x : w) sum += x;
  std::vector<int64_t> q(w.size());
  std::vector<std::pair<int64_t, size_t>> rem;  // (remainder numerator, index)
  int64_t given = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    __int128 num = static_cast<__int128>(total) * w[i];
    q[i] = static_cast<int64_t>(num / sum);
    rem.emplace_back(static_cast<int64_t>(num % sum), i);
    given += q[i];
  }
  std::stable_sort(rem.begin(), rem.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (int64_t k = 0; k < total - given; ++k) ++q[rem[static_cast<size_t>(k)].second];
  return q;
}

MixtureLoader::MixtureLoader(const MixtureSpec& spec, int64_t seq_len, int64_t vocab_size)
    : spec_(spec), seq_len_(seq_len) {
  double sum = 0;
  for (const auto& s : spec.sources) sum += s.weight;
  for (const auto& s : spec.sources) {
    streams_.push_back(std::make_unique<TokenLoader>(s.path, seq_len, vocab_size));
    weight_.push_back(std::max<int64_t>(1, std::llround(s.weight / sum * 1e6)));
  }
  acc_.assign(streams_.size(), 0);
  emitted_.assign(streams_.size(), 0);
  if (spec.total_tokens > 0) {
    quota_ = mixture_quotas(weight_, spec.total_tokens / seq_len);
    NMOE_CHECK(*std::max_element(quota_.begin(), quota_.end()) > 0, "mixture total_tokens ", spec.total_tokens,
               " is less than one sequence");
  }
}

size_t MixtureLoader::pick() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    int64_t active_sum = 0;
    for (size_t i = 0; i < streams_.size(); ++i)
      if (quota_.empty() || emitted_[i] < quota_[i]) {
        acc_[i] += weight_[i];
        active_sum += weight_[i];
      }
    if (active_sum > 0) {
      size_t best = streams_.size();
      for (size_t i = 0; i < streams_.size(); ++i)
        if ((quota_.empty() || emitted_[i] < quota_[i]) && (best == streams_.size() || acc_[i] > acc_[best])) best = i;
      acc_[best] -= active_sum;
      ++emitted_[best];
      return best;
    }
    // Every quota met: start a new pass over the mixture.
    ++passes_;
    std::fill(acc_.begin(), acc_.end(), 0);
    std::fill(emitted_.begin(), emitted_.end(), 0);
    if (on_wrap_) on_wrap_("mixture met every quota; starting pass " + std::to_string(passes_ + 1));
  }
  fail("mixture: no source can supply a sequence");
}

void MixtureLoader::next_batch(int64_t batch, int rank, int world, int32_t* out) {
  const int64_t begin = TokenLoader::slice_begin(batch, rank, world), len = TokenLoader::slice_size(batch, rank, world);
  for (int64_t i = 0; i < batch; ++i) {
    size_t s = pick();
    bool mine = i >= begin && i < begin + len;
    streams_[s]->next_sequence(mine ? out + (i - begin) * (seq_len_ + 1) : nullptr);
  }
  sequences_ += batch;
}

nlohmann::json MixtureLoader::state() const {
  nlohmann::json streams = nlohmann::json::object();
  for (size_t i = 0; i < streams_.size(); ++i) streams[spec_.sources[i].name] = streams_[i]->state();
  return {{"kind", "mixture"}, {"acc", acc_}, {"emitted", emitted_}, {"passes", passes_},
          {"sequences", sequences_}, {"streams", streams}};
}

void MixtureLoader::set_state(const nlohmann::json& j) {
  try {
    NMOE_CHECK(j.value("kind", "") == "mixture", "the checkpoint's loader state is not a mixture state");
    auto acc = j.at("acc").get<std::vector<int64_t>>();
    auto emitted = j.at("emitted").get<std::vector<int64_t>>();
    NMOE_CHECK(acc.size() == streams_.size() && emitted.size() == streams_.size(),
               "the checkpoint's mixture has ", acc.size(), " sources, this one ", streams_.size());
    for (size_t i = 0; i < streams_.size(); ++i) {
      const std::string& name = spec_.sources[i].name;
      NMOE_CHECK(j.at("streams").contains(name), "the checkpoint's mixture has no source '", name, "'");
      streams_[i]->set_state(j.at("streams").at(name));
    }
    acc_ = acc;
    emitted_ = emitted;
    passes_ = j.at("passes").get<int64_t>();
    sequences_ = j.at("sequences").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("mixture loader state is malformed: ", e.what());
  }
}

std::string MixtureLoader::describe() const {
  std::string s = "mixture of " + std::to_string(streams_.size()) + " sources:";
  for (size_t i = 0; i < streams_.size(); ++i)
    s += " " + spec_.sources[i].name + " (weight " + std::to_string(spec_.sources[i].weight) +
         (quota_.empty() ? "" : ", quota " + std::to_string(quota_[i]) + " sequences") + ")";
  return s;
}

int64_t MixtureLoader::total_tokens() const {
  int64_t n = 0;
  for (const auto& s : streams_) n += s->total_tokens();
  return n;
}

void MixtureLoader::on_wrap(std::function<void(const std::string&)> cb) {
  on_wrap_ = cb;
  for (auto& s : streams_) s->on_wrap(cb);
}

std::unique_ptr<DataLoader> make_data_loader(const std::string& data_path, const std::string& mixture_toml,
                                             int64_t seq_len, int64_t vocab_size) {
  if (!mixture_toml.empty()) return std::make_unique<MixtureLoader>(MixtureSpec::load(mixture_toml), seq_len, vocab_size);
  NMOE_CHECK(!data_path.empty(), "no training data: set data_path (a directory of .npy shards) or mixture_toml");
  return std::make_unique<TokenLoader>(data_path, seq_len, vocab_size);
}

}  // namespace nmoe

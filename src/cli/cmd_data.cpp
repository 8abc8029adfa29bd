#include <cmath>
#include <iostream>

#include "cli/commands.h"
#include "data/manifest.h"
#include "data/prep.h"
#include "train/progress.h"

namespace nmoe::cli {

namespace {

// 1000, 100K, 2.5M, 10B
int64_t parse_count(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (...) {
    throw UsageError(flag + " needs a number, got '" + v + "'");
  }
  std::string suffix = v.substr(used);
  double mul = suffix.empty() ? 1 : suffix == "K" || suffix == "k" ? 1e3 : suffix == "M" ? 1e6 : suffix == "B" || suffix == "G" ? 1e9 : -1;
  if (mul < 0 || x < 0 || !std::isfinite(x)) throw UsageError(flag + ": cannot read '" + v + "' (use e.g. 500M or 10B)");
  return static_cast<int64_t>(std::llround(x * mul));
}

int cmd_data_prep(const std::vector<std::string>& args) {
  PrepOptions o;
  o.log = &std::cerr;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--source") o.source.source = value();
    else if (a == "--dataset") o.source.dataset = value();
    else if (a == "--split") o.source.split = value();
    else if (a == "--revision") o.source.revision = value();
    else if (a == "--text-field") o.source.text_field = value();
    else if (a == "--text-format") o.source.text_format = value();
    else if (a == "--data-files") {
      o.source.files.push_back(value());
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) o.source.files.push_back(args[++i]);
    } else if (a == "--output") o.output = value();
    else if (a == "--name") o.name = value();
    else if (a == "--version") o.version = value();
    else if (a == "--tokenizer") o.tokenizer = value();
    else if (a == "--num-shards") o.num_shards = parse_count(a, value());
    else if (a == "--tokens-per-shard") o.tokens_per_shard = parse_count(a, value());
    else if (a == "--min-tokens") o.min_tokens = parse_count(a, value());
    else if (a == "--max-tokens") o.max_tokens = parse_count(a, value());
    else if (a == "--max-tokens-total") o.max_tokens_total = parse_count(a, value());
    else if (a == "--workers") o.workers = static_cast<int>(parse_count(a, value()));
    else if (a == "--no-nfc") o.normalize_nfc = false;
    else if (a == "--no-fsync") o.fsync = false;
    else throw UsageError("unknown option '" + a + "'");
  }
  if (o.source.source.empty()) throw UsageError("--source is required (text, jsonl, jsonl_zst, parquet or hf)");
  if (o.output.empty()) throw UsageError("--output DIR is required");
  PrepResult r = prep_dataset(o);
  const Manifest& m = r.manifest;
  std::cout << (r.already_prepared ? "already prepared: " : "prepared: ") << o.output << ": " << m.total_documents
            << " documents, " << m.total_tokens << " tokens in " << m.shards.size() << " shards (" << m.tokenizer
            << ", " << m.dtype << ")\n";
  return 0;
}

int cmd_data_verify(const std::vector<std::string>& args) {
  std::string dir;
  bool checksums = true;
  for (const std::string& a : args) {
    if (a == "--no-checksums") checksums = false;
    else if (!a.empty() && a[0] == '-') throw UsageError("unknown option '" + a + "'");
    else if (dir.empty()) dir = a;
    else throw UsageError("unexpected argument '" + a + "'");
  }
  if (dir.empty()) throw UsageError("verify needs a dataset directory");
  VerifyReport r = verify_dataset(dir, checksums);
  for (const std::string& p : r.problems) std::cout << "problem: " << p << "\n";
  std::cout << dir << ": " << r.shards << " shards, " << r.documents << " documents, " << r.tokens << " tokens: "
            << (r.ok() ? "ok" : std::to_string(r.problems.size()) + " problem(s)") << "\n";
  return r.ok() ? 0 : 1;
}

int cmd_data_info(const std::vector<std::string>& args) {
  if (args.size() != 1) throw UsageError("info needs one dataset directory");
  Manifest m = Manifest::read(args[0]);
  std::cout << "dataset   " << m.dataset << " " << m.version << "\n"
            << "tokenizer " << m.tokenizer << " (vocab " << m.vocab_size << ", EOS " << m.eos_token_id << ", "
            << m.dtype << ")\n"
            << "documents " << m.total_documents << " (" << format_count(static_cast<double>(m.total_documents)) << ")\n"
            << "tokens    " << m.total_tokens << " (" << format_count(static_cast<double>(m.total_tokens)) << ")\n"
            << "shards    " << m.shards.size() << "\n"
            << "created   " << m.created_at << "\n"
            << "source    " << m.source_info.dump() << "\n"
            << "stats     " << m.stats.dump() << "\n";
  return 0;
}

}  // namespace

int cmd_data(const std::vector<std::string>& args) {
  if (args.empty()) throw UsageError("data needs a subcommand: prep, verify or info");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "prep") return cmd_data_prep(rest);
  if (args[0] == "verify") return cmd_data_verify(rest);
  if (args[0] == "info") return cmd_data_info(rest);
  throw UsageError("unknown data subcommand '" + args[0] + "'");
}

}  // namespace nmoe::cli

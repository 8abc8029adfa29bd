#include <iostream>

#include "cli/commands.h"
#include "data/text_prep.h"

namespace nmoe::cli {

namespace {

int cmd_data_prep(const std::vector<std::string>& args) {
  std::string source, output, name = "data", version = "v1", tokenizer = "bytes";
  std::vector<std::string> files;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--source") source = value();
    else if (a == "--output") output = value();
    else if (a == "--name") name = value();
    else if (a == "--version") version = value();
    else if (a == "--tokenizer") tokenizer = value();
    else if (a == "--data-files") {
      files.push_back(value());
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) files.push_back(args[++i]);
    } else throw UsageError("unknown option '" + a + "'");
  }
  if (source != "text") throw UsageError("--source must be 'text' (other sources are not available yet)");
  if (tokenizer != "bytes") throw UsageError("--tokenizer must be 'bytes' (other tokenizers are not available yet)");
  if (output.empty()) throw UsageError("--output DIR is required");
  TextPrepResult r = prep_text_bytes(files, output, name, version);
  std::cout << "wrote " << r.tokens << " tokens from " << r.documents << " documents to " << output << "\n";
  return 0;
}

}  // namespace

int cmd_data(const std::vector<std::string>& args) {
  if (args.empty()) throw UsageError("data needs a subcommand: prep");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "prep") return cmd_data_prep(rest);
  throw UsageError("unknown data subcommand '" + args[0] + "'");
}

}  // namespace nmoe::cli

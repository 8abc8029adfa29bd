#include <cstdlib>

#include "cli/commands.h"

namespace nmoe::cli {

namespace {

const char* kDeviceList = "device numbers, like 0,1 or 0,0,1,1";

int parse_nproc(const std::string& v) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 1 || n > 1024)
    throw UsageError("--nproc needs a number of processes from 1 to 1024, not '" + v + "'");
  return static_cast<int>(n);
}

}  // namespace

std::vector<std::string> split_comma_list(const std::string& flag, const std::string& v, const std::string& what) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t comma = v.find(',', start);
    out.push_back(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (out.back().empty()) throw UsageError(flag + " needs a comma list of " + what);
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

LaunchOptions parse_launch_args(std::vector<std::string>& args) {
  LaunchOptions opts;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--nproc") opts.nproc = parse_nproc(value());
    else if (a.rfind("--nproc=", 0) == 0) opts.nproc = parse_nproc(a.substr(8));
    else if (a == "--devices") opts.devices = split_comma_list(a, value(), kDeviceList);
    else if (a.rfind("--devices=", 0) == 0) opts.devices = split_comma_list("--devices", a.substr(10), kDeviceList);
    else if (a == "--all-ranks-output") opts.all_ranks_output = true;
    else {
      rest.push_back(a);
      // The value of --set is never a launch option.
      if (a == "--set" && i + 1 < args.size()) rest.push_back(args[++i]);
    }
  }
  if (!opts.devices.empty() && opts.devices.size() != static_cast<size_t>(opts.nproc))
    throw UsageError("--devices lists " + std::to_string(opts.devices.size()) + " device(s) but --nproc is " +
                     std::to_string(opts.nproc) + ": give one device per rank (repeat one to share a GPU)");
  args = std::move(rest);
  return opts;
}

}  // namespace nmoe::cli

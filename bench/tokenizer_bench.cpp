// Single-thread tokenizer throughput.
//
//   nmoe_tokenizer_bench --tokenizer gpt2 --file PATH [--seconds 3]
//
// PATH is plain text or .zst. Invalid UTF-8 is repaired first (sanitize_utf8).
// The whole text is encoded repeatedly (after one warm-up pass) on the calling
// thread until --seconds have passed; prints one JSON line.
#include <zstd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NMOE_CHECK(f.good(), "cannot read ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string data = ss.str();
  if (path.size() < 4 || path.compare(path.size() - 4, 4, ".zst") != 0) return data;
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::vector<char> buf(1 << 20);
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    const size_t rc = ZSTD_decompressStream(ctx.get(), &ob, &in);
    NMOE_CHECK(!ZSTD_isError(rc), path, ": ", ZSTD_getErrorName(rc));
    out.append(buf.data(), ob.pos);
  }
  return out;
}

int usage() {
  std::cerr << "usage: nmoe_tokenizer_bench --tokenizer NAME --file PATH[.zst] [--seconds S]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string name, file;
  double seconds = 3.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--tokenizer") name = argv[++i];
    else if (a == "--file") file = argv[++i];
    else if (a == "--seconds") seconds = std::stod(argv[++i]);
    else return usage();
  }
  if (name.empty() || file.empty() || !(seconds > 0)) return usage();
  try {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    auto tok = nmoe::load_tokenizer(name);
    const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::string text = read_file(file);
    const size_t replaced = nmoe::sanitize_utf8(text);

    std::vector<uint32_t> ids;
    tok->encode_ordinary(text, ids);  // warm-up: caches, page faults
    const size_t tokens = ids.size();
    size_t passes = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      ids.clear();
      tok->encode_ordinary(text, ids);
      ++passes;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < seconds);
    const double bytes = static_cast<double>(text.size()) * static_cast<double>(passes);
    nlohmann::json out = {
        {"tokenizer", name},
        {"file", file},
        {"bytes", text.size()},
        {"tokens", tokens},
        {"bytes_per_token", tokens ? static_cast<double>(text.size()) / static_cast<double>(tokens) : 0.0},
        {"replaced_invalid_utf8", replaced},
        {"threads", 1},
        {"passes", passes},
        {"seconds", elapsed},
        {"MB_per_s", bytes / elapsed / 1e6},
        {"tokens_per_s", static_cast<double>(tokens) * static_cast<double>(passes) / elapsed},
        {"load_seconds", load_s},
    };
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

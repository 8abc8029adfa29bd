// Loader throughput on one core from a warm page cache: how many tokens per
// second next_batch delivers (reading, widening to int32, vocabulary check).
//   nmoe_loader_bench DATA_DIR [--seq 2048] [--batch 32] [--seconds 3] [--vocab 50304]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/loader.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: nmoe_loader_bench DATA_DIR [--seq N] [--batch N] [--seconds S] [--vocab V]\n");
    return 2;
  }
  std::string dir = argv[1];
  int64_t seq = 2048, batch = 32, vocab = 50304;
  double seconds = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seq") seq = std::atoll(argv[i + 1]);
    else if (a == "--batch") batch = std::atoll(argv[i + 1]);
    else if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--vocab") vocab = std::atoll(argv[i + 1]);
  }
  try {
    nmoe::TokenLoader loader(dir, seq, vocab);
    std::vector<int32_t> out(batch * (seq + 1));
    for (int i = 0; i < 3; ++i) loader.next_batch(batch, 0, 1, out.data());  // warm the page cache
    auto t0 = std::chrono::steady_clock::now();
    int64_t tokens = 0;
    double el = 0;
    while (el < seconds) {
      loader.next_batch(batch, 0, 1, out.data());
      tokens += batch * (seq + 1);
      el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    std::printf("{\"bench\": \"loader\", \"seq\": %lld, \"batch\": %lld, \"tokens\": %lld, \"seconds\": %.3f, "
                "\"tokens_per_s\": %.0f}\n",
                static_cast<long long>(seq), static_cast<long long>(batch), static_cast<long long>(tokens), el,
                tokens / el);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// The stream-ordered flags of peer memory (dist/peer_memory.h) and the MoE
// transport built on them (dist/peer_transport.cpp), on the CPU: ranks are
// threads joined through POSIX shared memory. A wait sees the data written
// before the signal; a wait that is never answered fails naming its phase;
// many exchanges in a row, with the return phase never waiting on the host,
// bring every row back from its owner, over random routings that include
// empty and one-sided blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "dist/abort.h"
#include "dist/expert_transport.h"
#include "dist/peer_memory.h"
#include "dist/rendezvous.h"
#include "dist/shm_group.h"
#include "dist/tcp.h"
#include "dist_test_util.h"

namespace nmoe {
namespace {

DistEnv env_for(int rank, int world, int port) {
  return test::rank_env(rank, world, port, "flags-test-" + std::to_string(port));
}

TEST(PeerFlags, WaitSeesTheDataWrittenBeforeTheSignal) {
  reset_dist_failure();
  const int W = 2, port = tcp::free_port(), rounds = 2000;
  const size_t bytes = 4096;
  auto errors = test::on_threads(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    ShmGroup g(env_for(r, W, port).job_id, r, W, bytes, [&rv] { rv.barrier(); });
    auto pm = make_host_peer_memory(g, 0, bytes);
    const int peer = 1 - r;
    // Per area: flag [0], then the payload; ping-pong: each round one rank
    // writes its peer's payload and raises the peer's flag.
    auto flag = [&](int owner) { return reinterpret_cast<uint64_t*>(pm->area(owner)); };
    auto payload = [&](int owner) { return reinterpret_cast<int64_t*>(pm->area(owner) + 64); };
    for (int64_t round = 1; round <= rounds; ++round) {
      if ((round % 2 == 1) == (r == 0)) {
        for (int i = 0; i < 64; ++i) payload(peer)[i] = round * 1000 + i;
        pm->signal(flag(peer), static_cast<uint64_t>(round));
      } else {
        pm->wait(flag(r), 1, static_cast<uint64_t>(round), "ping-pong round " + std::to_string(round));
        for (int i = 0; i < 64; ++i)
          if (payload(r)[i] != round * 1000 + i) fail("round ", round, " element ", i, " was ", payload(r)[i]);
      }
    }
  });
  for (int r = 0; r < W; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(PeerFlags, UnansweredWaitFailsNamingThePhaseAndThePeer) {
  reset_dist_failure();
  const int W = 2, port = tcp::free_port();
  const size_t bytes = 4096;
  auto errors = test::on_threads(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    ShmGroup g(env_for(r, W, port).job_id, r, W, bytes, [&rv] { rv.barrier(); });
    g.set_timeout(1.0);
    auto pm = make_host_peer_memory(g, 0, bytes);
    auto* flags = reinterpret_cast<uint64_t*>(pm->area(r));
    pm->signal(reinterpret_cast<uint64_t*>(pm->area(0)) + r, 1);  // both raise rank 0's flags
    if (r == 0) pm->wait(flags, W, 1, "test phase A");             // answered
    if (r == 1) pm->wait(flags, W, 1, "test phase B");             // nobody raises rank 1's
  });
  EXPECT_NE(errors[1].find("test phase B"), std::string::npos) << errors[1];
  EXPECT_NE(errors[1].find("rank 1 waited 1 s for rank 0"), std::string::npos) << errors[1];
  EXPECT_EQ(errors[0].find("test phase A"), std::string::npos) << errors[0];
}

TEST(PeerTransport, ManyExchangesBringEveryRowBackFromItsOwner) {
  reset_dist_failure();
  const int W = 3, port = tcp::free_port(), rounds = 60;
  const int64_t El = 2, E = El * W, rows = 40, dim = 8;
  const TransportSizes sz = transport_sizes(W, rows, dim, El, DType::F32);
  auto errors = test::on_threads(W, [&](int r) {
    CpuBackend be(1);
    Rendezvous rv(env_for(r, W, port), 30);
    ShmGroup g(env_for(r, W, port).job_id, r, W, sz.host + sz.bulk, [&rv] { rv.barrier(); });
    auto pm = make_host_peer_memory(g, sz.host, sz.bulk);
    auto T = make_peer_transport(be, g, 0, *pm, 0, rows, dim, El, DType::F32);
    std::mt19937_64 rng(17 + r);
    std::vector<float> a(rows * dim), b(rows * dim), y(rows * dim);
    std::vector<int32_t> off(E + 1);
    for (int round = 1; round <= rounds; ++round) {
      // Random segment sizes, some empty; every fourth round sends every row
      // to the last expert, every fourth to the first.
      std::vector<int64_t> cut(E - 1);
      const int mode = static_cast<int>(rng() % 4);
      for (int64_t& c : cut) c = mode == 0 ? 0 : mode == 1 ? rows : static_cast<int64_t>(rng() % (rows + 1));
      std::sort(cut.begin(), cut.end());
      off[0] = 0;
      for (int64_t e = 1; e < E; ++e) off[e] = static_cast<int32_t>(cut[e - 1]);
      off[E] = static_cast<int32_t>(rows);
      for (int64_t i = 0; i < rows * dim; ++i) {
        a[i] = static_cast<float>(r * 100000 + round * 100 + i % 97);
        b[i] = -a[i];
      }
      const bool with_b = round % 3 == 0;
      T->send(Tensor(a.data(), DType::F32, Shape{rows, dim}), with_b ? Tensor(b.data(), DType::F32, Shape{rows, dim}) : Tensor(),
              Tensor(off.data(), DType::I32, Shape{E + 1}), "exchange " + std::to_string(round));
      for (int src = 0; src < W; ++src) {
        ReceivedBlock blk = T->received(src);
        if (blk.rows == 0) continue;
        if (with_b != blk.b.defined()) fail("round ", round, ": the second tensor ", with_b ? "is missing" : "appeared");
        // The owner's answer: 2a + 1 (and + b, which cancels a).
        std::vector<float> out(blk.rows * dim);
        const float* in = blk.a.ptr<float>();
        for (int64_t i = 0; i < blk.rows * dim; ++i)
          out[i] = 2 * in[i] + 1 + (with_b ? blk.b.ptr<float>()[i] + in[i] : 0.f);
        T->put_back(src, Tensor(out.data(), DType::F32, Shape{blk.rows, dim}));
      }
      const Tensor back = T->finish_return("return " + std::to_string(round));
      const float* got = back.ptr<float>();
      for (int64_t i = 0; i < rows * dim; ++i)
        if (got[i] != 2 * a[i] + 1) fail("round ", round, " rank ", r, " element ", i, ": ", got[i], " != ", 2 * a[i] + 1);
    }
  });
  for (int r = 0; r < W; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  EXPECT_FALSE(dist_failed()) << dist_failure_message();
}

}  // namespace
}  // namespace nmoe

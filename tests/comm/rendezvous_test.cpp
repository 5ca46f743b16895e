// The TCP rendezvous on loopback, each rank a thread of this process. Ports are chosen by the
// kernel (bind to port 0). Timeouts are short so that the failure tests are fast, and every
// test is bounded by them: no wait here lacks a deadline.
#include "comm/rendezvous/rendezvous.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comm/rendezvous/message.h"
#include "runtime/base/error.h"

namespace zoro::comm {
namespace {

using namespace std::chrono_literals;

RendezvousOptions options_for(int rank, int world, std::uint16_t port,
                              std::string token = "s3cret") {
  RendezvousOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.rank = rank;
  o.world_size = world;
  o.token = std::move(token);
  o.join_timeout = 10s;  // generous for a loaded CI machine; the success paths take ms
  o.op_timeout = 10s;
  return o;
}

// What one rank's thread did: its error text, if any.
struct Outcome {
  std::string error;  // empty on success
  bool invalid_argument = false;
};

// Runs `body(rank, rendezvous)` on `world` threads after joining; rank 0 uses `listener`.
std::vector<Outcome> run_ranks(int world, RendezvousListener listener,
                               const std::function<RendezvousOptions(int)>& opts,
                               const std::function<void(int, Rendezvous&)>& body,
                               const std::vector<int>& absent = {}) {
  std::vector<Outcome> outcomes(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  std::optional<RendezvousListener> held(std::move(listener));
  for (int r = 0; r < world; ++r) {
    if (std::find(absent.begin(), absent.end(), r) != absent.end()) continue;
    std::optional<RendezvousListener> mine;
    if (r == 0) mine.emplace(std::move(*held));
    threads.emplace_back([&, r, mine = std::move(mine)]() mutable {
      auto& out = outcomes[static_cast<std::size_t>(r)];
      try {
        auto rdv = r == 0 ? Rendezvous::join(std::move(*mine), opts(r)) : Rendezvous::join(opts(r));
        body(r, *rdv);
      } catch (const InvalidArgument& e) {
        out.error = e.what();
        out.invalid_argument = true;
      } catch (const std::exception& e) {
        out.error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return outcomes;
}

bool contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

class RendezvousWorld : public ::testing::TestWithParam<int> {};

TEST_P(RendezvousWorld, JoinsExchangesBlobsAndAgrees) {
  const int world = GetParam();
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  std::vector<std::vector<std::vector<std::uint8_t>>> gathered(static_cast<std::size_t>(world));
  std::vector<std::vector<std::uint8_t>> broadcasted(static_cast<std::size_t>(world));
  const auto outcomes = run_ranks(
      world, std::move(listener), [&](int r) { return options_for(r, world, port); },
      [&](int r, Rendezvous& rdv) {
        EXPECT_EQ(rdv.rank(), r);
        EXPECT_EQ(rdv.world_size(), world);
        // Blobs of different sizes, one of them empty.
        std::vector<std::uint8_t> blob(static_cast<std::size_t>(r * 3),
                                       static_cast<std::uint8_t>(r + 1));
        gathered[static_cast<std::size_t>(r)] = rdv.all_gather(blob);
        std::vector<std::uint8_t> id(128, 0xAB);
        broadcasted[static_cast<std::size_t>(r)] =
            rdv.broadcast_from_rank0(r == 0 ? id : std::vector<std::uint8_t>{});
        rdv.verify_agreement(0xC0FFEE, "config fingerprint");
        // Used again: a second exchange on the same connections.
        gathered[static_cast<std::size_t>(r)] = rdv.all_gather(blob);
      });
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(outcomes[static_cast<std::size_t>(r)].error, "");
    ASSERT_EQ(gathered[static_cast<std::size_t>(r)].size(), static_cast<std::size_t>(world));
    for (int s = 0; s < world; ++s) {
      EXPECT_EQ(gathered[static_cast<std::size_t>(r)][static_cast<std::size_t>(s)],
                std::vector<std::uint8_t>(static_cast<std::size_t>(s * 3),
                                          static_cast<std::uint8_t>(s + 1)));
    }
    EXPECT_EQ(broadcasted[static_cast<std::size_t>(r)], std::vector<std::uint8_t>(128, 0xAB));
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, RendezvousWorld, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return "world" + std::to_string(p.param);
                         });

TEST(Rendezvous, DisagreementNamesTheRankOnEveryRank) {
  const int world = 4;
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  const auto outcomes = run_ranks(
      world, std::move(listener), [&](int r) { return options_for(r, world, port); },
      [&](int r, Rendezvous& rdv) {
        rdv.verify_agreement(r == 2 ? 0xBAD : 0x600D, "model fingerprint");
      });
  for (const auto& o : outcomes) {
    EXPECT_TRUE(o.invalid_argument) << o.error;
    EXPECT_TRUE(contains(o.error, "model fingerprint")) << o.error;
    EXPECT_TRUE(contains(o.error, "rank(s) 2 disagree")) << o.error;
  }
}

TEST(Rendezvous, WrongTokenIsRefused) {
  const int world = 2;
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  const auto outcomes = run_ranks(
      world, std::move(listener),
      [&](int r) {
        auto o = options_for(r, world, port, r == 1 ? "guess" : "s3cret");
        o.join_timeout = 1500ms;
        return o;
      },
      [](int, Rendezvous&) { ADD_FAILURE() << "joined with a wrong token"; });
  EXPECT_TRUE(outcomes[1].invalid_argument) << outcomes[1].error;
  EXPECT_TRUE(contains(outcomes[1].error, "refused")) << outcomes[1].error;
  EXPECT_TRUE(contains(outcomes[1].error, "wrong token")) << outcomes[1].error;
  // Rank 0 keeps waiting for a rightful rank 1, then times out naming it and the refusal.
  EXPECT_TRUE(contains(outcomes[0].error, "rank(s) 1 of 2 never joined")) << outcomes[0].error;
  EXPECT_TRUE(contains(outcomes[0].error, "wrong token")) << outcomes[0].error;
}

TEST(Rendezvous, MismatchedWorldSizeIsRefused) {
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  const auto outcomes = run_ranks(
      2, std::move(listener),
      [&](int r) {
        auto o = options_for(r, r == 1 ? 3 : 2, port);
        o.join_timeout = 1500ms;
        return o;
      },
      [](int, Rendezvous&) { ADD_FAILURE() << "joined with a wrong world size"; });
  EXPECT_TRUE(outcomes[1].invalid_argument) << outcomes[1].error;
  EXPECT_TRUE(contains(outcomes[1].error, "world size 3")) << outcomes[1].error;
}

TEST(Rendezvous, MissingPeersTimeOutNamingThem) {
  const int world = 4;
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  const auto outcomes = run_ranks(
      world, std::move(listener),
      [&](int r) {
        auto o = options_for(r, world, port);
        o.join_timeout = 800ms;
        return o;
      },
      [](int, Rendezvous&) { ADD_FAILURE() << "joined without ranks 1 and 3"; }, /*absent=*/{1, 3});
  EXPECT_FALSE(outcomes[0].invalid_argument);
  EXPECT_TRUE(contains(outcomes[0].error, "rank(s) 1, 3 of 4 never joined")) << outcomes[0].error;
  // Rank 2 either times out itself or sees rank 0 give up first (the same timeout).
  EXPECT_TRUE(contains(outcomes[2].error, "timed out") ||
              contains(outcomes[2].error, "did not complete the join"))
      << outcomes[2].error;
}

TEST(Rendezvous, NoRankZeroTimesOut) {
  // A port nobody listens on: bind one, note it, close it.
  std::uint16_t port = 0;
  { port = RendezvousListener::bind("127.0.0.1", 0).port(); }
  auto o = options_for(1, 2, port);
  o.join_timeout = 400ms;
  try {
    (void)Rendezvous::join(o);
    ADD_FAILURE() << "joined without rank 0";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "could not reach rank 0")) << e.what();
  }
}

TEST(Rendezvous, MissingDataTimesOutNamingTheRank) {
  const int world = 3;
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();
  const auto outcomes = run_ranks(
      world, std::move(listener),
      [&](int r) {
        auto o = options_for(r, world, port);
        o.op_timeout = 500ms;
        return o;
      },
      [](int r, Rendezvous& rdv) {
        if (r == 2) return;  // joins, then never contributes (and closes when done)
        (void)rdv.all_gather(std::vector<std::uint8_t>{1, 2, 3});
      });
  // Rank 2 either has not sent (timeout naming it) or has closed its connection (an error
  // naming it); either way rank 0 names rank 2.
  EXPECT_TRUE(contains(outcomes[0].error, "rank 2") || contains(outcomes[0].error, "rank(s) 2"))
      << outcomes[0].error;
  EXPECT_FALSE(outcomes[1].error.empty());
  EXPECT_EQ(outcomes[2].error, "");
}

// Garbage from a stranger (an HTTP request, random bytes, a truncated frame, a hello with a
// hostile length) is dropped without a crash, and the real ranks still join.
TEST(Rendezvous, GarbageConnectionsAreRejectedAndTheRunProceeds) {
  namespace asio = boost::asio;
  const int world = 2;
  auto listener = RendezvousListener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.port();

  std::promise<void> rank0_ready;
  std::vector<std::uint8_t> hostile_hello = rendezvous::encode_message({});
  hostile_hello[0] = 0xFF;  // announces a 4 GiB-ish body
  hostile_hello[1] = 0xFF;
  hostile_hello[2] = 0xFF;
  hostile_hello[3] = 0x7F;
  const std::vector<std::vector<std::uint8_t>> garbage = {
      {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n'},
      {0x13, 0x00, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF, 1,  2,  3, 4,
       5,    6,    7,    8,    9,    10,   11,   12,   13, 14, 15},
      hostile_hello,
  };
  std::vector<std::string> replies(garbage.size());
  std::thread stranger([&] {
    asio::io_context io;
    for (std::size_t i = 0; i < garbage.size(); ++i) {
      asio::ip::tcp::socket s(io);
      boost::system::error_code ec;
      for (int attempt = 0; attempt < 200; ++attempt) {
        s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
        if (!ec) break;
        s.close();
        std::this_thread::sleep_for(10ms);
      }
      ASSERT_FALSE(ec) << ec.message();
      asio::write(s, asio::buffer(garbage[i]), ec);
      // The host answers with a reject (or just closes); read until EOF. Bounded: the host
      // closes the connection after refusing it.
      std::vector<std::uint8_t> reply(4096);
      std::size_t n = 0;
      while (true) {
        const std::size_t got = s.read_some(asio::buffer(reply.data() + n, reply.size() - n), ec);
        n += got;
        if (ec || n == reply.size()) break;
      }
      replies[i] = std::string(reply.begin(), reply.begin() + static_cast<std::ptrdiff_t>(n));
    }
  });
  // Rank 1 joins only after the stranger is done, so rank 0 must survive all the garbage.
  const auto outcomes = run_ranks(
      world, std::move(listener),
      [&](int r) {
        if (r == 1) stranger.join();
        return options_for(r, world, port);
      },
      [](int r, Rendezvous& rdv) {
        rdv.verify_agreement(7, "config");
        (void)r;
      });
  if (stranger.joinable()) stranger.join();
  EXPECT_EQ(outcomes[0].error, "");
  EXPECT_EQ(outcomes[1].error, "");
  for (const auto& reply : replies) {
    EXPECT_TRUE(contains(reply, "malformed message")) << reply;
  }
}

TEST(RendezvousOptionsTest, RejectsBadOptions) {
  auto o = options_for(2, 2, 1);
  EXPECT_THROW((void)Rendezvous::join(o), InvalidArgument);
  o = options_for(0, 2, 1, std::string(1000, 't'));
  EXPECT_THROW((void)Rendezvous::join(o), InvalidArgument);
}

}  // namespace
}  // namespace zoro::comm

// The rendezvous message parser against hostile input: every buffer either parses or throws
// InvalidArgument; none crashes, reads out of bounds (ASan) or throws anything else.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "comm/rendezvous/message.h"
#include "runtime/base/error.h"
#include "tests/support/random.h"

namespace zoro::comm::rendezvous {
namespace {

Message sample(std::mt19937_64& rng) {
  Message m;
  m.type = static_cast<MessageType>(1 + rng() % 4);
  m.rank = static_cast<std::uint32_t>(rng() % 8);
  m.world_size = static_cast<std::uint32_t>(1 + rng() % 8);
  m.token = std::string(rng() % 40, 'k');
  m.payload = ::zoro::testing::random_bytes(rng, rng() % 200);
  return m;
}

// Parses or throws InvalidArgument; returns whether it parsed.
bool parses(const std::vector<std::uint8_t>& bytes) {
  try {
    (void)parse_message(bytes);
    return true;
  } catch (const InvalidArgument&) {
    return false;
  }
}

TEST(RendezvousMessage, RoundTrips) {
  ZORO_TRACE_SEED();
  auto rng = ::zoro::testing::make_rng(1);
  for (int i = 0; i < 200; ++i) {
    const Message m = sample(rng);
    const Message back = parse_message(encode_message(m));
    EXPECT_EQ(back.type, m.type);
    EXPECT_EQ(back.rank, m.rank);
    EXPECT_EQ(back.world_size, m.world_size);
    EXPECT_EQ(back.token, m.token);
    EXPECT_EQ(back.payload, m.payload);
  }
}

TEST(RendezvousMessage, NamesEachProblem) {
  Message m;
  m.token = "secret";
  const auto good = encode_message(m);
  auto expect_error = [](std::vector<std::uint8_t> bytes, const std::string& fragment) {
    try {
      (void)parse_message(bytes);
      ADD_FAILURE() << "parsed: expected an error containing '" << fragment << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error({}, "truncated");
  expect_error({good.begin(), good.end() - 1}, "length mismatch");
  auto bad_magic = good;
  bad_magic[4] ^= 0xFF;
  expect_error(bad_magic, "bad magic");
  auto bad_version = good;
  bad_version[8] = 9;
  expect_error(bad_version, "version 9");
  auto bad_type = good;
  bad_type[10] = 77;
  expect_error(bad_type, "unknown rendezvous message type 77");
  auto oversized = good;
  oversized[3] = 0x7F;  // announces ~2 GiB
  expect_error(oversized, "oversized");
  auto huge_payload = good;
  huge_payload[22 + 3] = 0x01;  // payload_bytes = 16 MiB + ...
  expect_error(huge_payload, "oversized");
  std::vector<std::uint8_t> http = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'};
  expect_error(http, "oversized");
  EXPECT_THROW(parse_prefix(std::vector<std::uint8_t>{1, 0, 0, 0}), InvalidArgument);
  EXPECT_THROW(parse_blob_list(std::vector<std::uint8_t>{2, 0, 0, 0, 9, 0, 0, 0}, 2),
               InvalidArgument);
  EXPECT_THROW(parse_blob_list(encode_blob_list({{1, 2}, {3}}), 3), InvalidArgument);
  EXPECT_EQ(parse_blob_list(encode_blob_list({{1, 2}, {3}}), 2).size(), 2u);
}

// Thousands of random buffers, truncations and single-byte corruptions of valid frames, and
// random lengths: the parser either returns a message or throws InvalidArgument.
TEST(RendezvousMessage, FuzzNeverCrashes) {
  ZORO_TRACE_SEED();
  auto rng = ::zoro::testing::make_rng(2);
  int parsed = 0;
  int rejected = 0;
  const auto tally = [&](const std::vector<std::uint8_t>& bytes) {
    (parses(bytes) ? parsed : rejected)++;
  };
  for (int i = 0; i < 3000; ++i) {
    // Pure garbage of random length.
    tally(::zoro::testing::random_bytes(rng, rng() % 96));
    // A valid frame, truncated at a random point.
    const auto frame = encode_message(sample(rng));
    tally({frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(rng() % frame.size())});
    // A valid frame with 1..4 random bytes overwritten (lengths, magic, type included).
    auto corrupt = frame;
    for (std::uint64_t k = 0, n = 1 + rng() % 4; k < n; ++k) {
      corrupt[rng() % corrupt.size()] = static_cast<std::uint8_t>(rng());
    }
    tally(corrupt);
    // A valid frame with garbage appended.
    auto longer = frame;
    longer.push_back(static_cast<std::uint8_t>(rng()));
    tally(longer);
    // Random bytes after a plausible prefix.
    auto plausible = ::zoro::testing::random_bytes(rng, kHeaderBytes + rng() % 64);
    const auto body = static_cast<std::uint32_t>(plausible.size());
    std::vector<std::uint8_t> with_prefix = {static_cast<std::uint8_t>(body),
                                             static_cast<std::uint8_t>(body >> 8), 0, 0};
    with_prefix.insert(with_prefix.end(), plausible.begin(), plausible.end());
    tally(with_prefix);
    // Blob lists, likewise.
    try {
      (void)parse_blob_list(::zoro::testing::random_bytes(rng, rng() % 32), rng() % 4);
    } catch (const InvalidArgument&) {
    }
  }
  EXPECT_GT(rejected, 10000);
  EXPECT_EQ(parsed + rejected, 15000);
}

}  // namespace
}  // namespace zoro::comm::rendezvous

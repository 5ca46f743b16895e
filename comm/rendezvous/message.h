// The rendezvous wire format: one length-prefixed binary frame per message, and its parser.
//
// Frame (all integers little-endian):
//   u32 body_bytes            bytes that follow; at most kMaxBodyBytes
//   u32 magic                 kMagic ("ZORV")
//   u16 version               kVersion
//   u16 type                  MessageType
//   u32 rank                  sender's rank (rank 0 for messages from the host)
//   u32 world_size            sender's idea of the world size
//   u16 token_bytes           at most kMaxTokenBytes
//   u32 payload_bytes         at most kMaxPayloadBytes
//   token_bytes bytes         the shared token (ZORO_RENDEZVOUS_TOKEN)
//   payload_bytes bytes       type-specific
// body_bytes must equal kHeaderBytes + token_bytes + payload_bytes exactly.
//
// parse_message is a pure function: for any input it either returns the message or throws
// InvalidArgument naming the first problem (never reads out of bounds, never allocates more
// than the input's size). Rank/world-size consistency and the token are checked by the
// rendezvous, which knows what to expect; the parser checks only the format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace zoro::comm::rendezvous {

inline constexpr std::uint32_t kMagic = 0x56524F5Au;  // "ZORV" in memory order
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::size_t kPrefixBytes = 4;
inline constexpr std::size_t kHeaderBytes = 4 + 2 + 2 + 4 + 4 + 2 + 4;  // after the prefix
inline constexpr std::size_t kMaxTokenBytes = 256;
inline constexpr std::size_t kMaxPayloadBytes = 1u << 20;  // blobs are ids and fingerprints
inline constexpr std::size_t kMaxBodyBytes = kHeaderBytes + kMaxTokenBytes + kMaxPayloadBytes;

enum class MessageType : std::uint16_t {
  kHello = 1,    // peer -> host: "I am rank r of n" (empty payload)
  kWelcome = 2,  // host -> peer: every rank has joined (empty payload)
  kReject = 3,   // host -> peer: refused; the payload is the reason (text)
  kData = 4,     // an all_gather contribution (peer -> host) or the gathered list (host -> peer)
};
const char* to_string(MessageType type);

struct Message {
  MessageType type = MessageType::kHello;
  std::uint32_t rank = 0;
  std::uint32_t world_size = 0;
  std::string token;
  std::vector<std::uint8_t> payload;
};

// The whole frame, prefix included. Throws InvalidArgument for a token or payload over its
// limit.
std::vector<std::uint8_t> encode_message(const Message& message);

// The body size announced by a 4-byte prefix; throws InvalidArgument when it is below
// kHeaderBytes or above kMaxBodyBytes (so a reader never allocates for a hostile length).
std::size_t parse_prefix(std::span<const std::uint8_t> prefix);

// Parses one whole frame (prefix + body, nothing more, nothing less).
Message parse_message(std::span<const std::uint8_t> frame);

// The payload of the host's kData reply: u32 count, then per blob u32 bytes + bytes.
std::vector<std::uint8_t> encode_blob_list(const std::vector<std::vector<std::uint8_t>>& blobs);
// Throws InvalidArgument unless the payload holds exactly `expected_count` blobs.
std::vector<std::vector<std::uint8_t>> parse_blob_list(std::span<const std::uint8_t> payload,
                                                       std::size_t expected_count);

}  // namespace zoro::comm::rendezvous

#include "comm/rendezvous/message.h"

#include "runtime/base/check.h"

namespace zoro::comm::rendezvous {
namespace {

// A bounds-checked little-endian reader over untrusted bytes.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  std::uint64_t read(std::size_t width, const char* field) {
    ZORO_CHECK(remaining() >= width, "rendezvous message truncated in field '"
                                         << field << "' (" << remaining() << " bytes left, "
                                         << width << " needed)");
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i) value |= std::uint64_t{bytes_[pos_ + i]} << (8 * i);
    pos_ += width;
    return value;
  }
  std::span<const std::uint8_t> take(std::size_t n, const char* field) {
    ZORO_CHECK(remaining() >= n, "rendezvous message truncated in field '"
                                     << field << "' (" << remaining() << " bytes left, " << n
                                     << " needed)");
    auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::size_t remaining() const { return bytes_.size() - pos_; }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t pos_ = 0;
};

void put(std::vector<std::uint8_t>& out, std::uint64_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i)
    out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

}  // namespace

const char* to_string(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "hello";
    case MessageType::kWelcome:
      return "welcome";
    case MessageType::kReject:
      return "reject";
    case MessageType::kData:
      return "data";
  }
  return "unknown";
}

std::vector<std::uint8_t> encode_message(const Message& message) {
  ZORO_CHECK(message.token.size() <= kMaxTokenBytes,
             "rendezvous token of " << message.token.size() << " bytes exceeds " << kMaxTokenBytes);
  ZORO_CHECK(
      message.payload.size() <= kMaxPayloadBytes,
      "rendezvous payload of " << message.payload.size() << " bytes exceeds " << kMaxPayloadBytes);
  const std::size_t body = kHeaderBytes + message.token.size() + message.payload.size();
  std::vector<std::uint8_t> out;
  out.reserve(kPrefixBytes + body);
  put(out, body, 4);
  put(out, kMagic, 4);
  put(out, kVersion, 2);
  put(out, static_cast<std::uint16_t>(message.type), 2);
  put(out, message.rank, 4);
  put(out, message.world_size, 4);
  put(out, message.token.size(), 2);
  put(out, message.payload.size(), 4);
  out.insert(out.end(), message.token.begin(), message.token.end());
  out.insert(out.end(), message.payload.begin(), message.payload.end());
  return out;
}

std::size_t parse_prefix(std::span<const std::uint8_t> prefix) {
  Reader reader(prefix);
  const auto body = static_cast<std::size_t>(reader.read(4, "length"));
  ZORO_CHECK(reader.remaining() == 0,
             "rendezvous prefix has " << prefix.size() << " bytes instead of " << kPrefixBytes);
  ZORO_CHECK(body >= kHeaderBytes, "rendezvous message of " << body
                                                            << " bytes is shorter than its header ("
                                                            << kHeaderBytes << ")");
  ZORO_CHECK(body <= kMaxBodyBytes, "rendezvous message of "
                                        << body << " bytes is oversized (limit " << kMaxBodyBytes
                                        << ")");
  return body;
}

Message parse_message(std::span<const std::uint8_t> frame) {
  ZORO_CHECK(frame.size() >= kPrefixBytes,
             "rendezvous message truncated: " << frame.size() << " bytes, no length prefix");
  const std::size_t body = parse_prefix(frame.first(kPrefixBytes));
  ZORO_CHECK(frame.size() - kPrefixBytes == body,
             "rendezvous message length mismatch: prefix announces "
                 << body << " bytes, " << frame.size() - kPrefixBytes << " present");
  Reader reader(frame.subspan(kPrefixBytes));
  const auto magic = static_cast<std::uint32_t>(reader.read(4, "magic"));
  ZORO_CHECK(magic == kMagic,
             "not a zoro rendezvous message (bad magic 0x" << std::hex << magic << ")");
  const auto version = static_cast<std::uint16_t>(reader.read(2, "version"));
  ZORO_CHECK(version == kVersion, "rendezvous protocol version "
                                      << version << " is not supported (this build speaks "
                                      << kVersion << ")");
  const auto type = static_cast<std::uint16_t>(reader.read(2, "type"));
  ZORO_CHECK(type >= static_cast<std::uint16_t>(MessageType::kHello) &&
                 type <= static_cast<std::uint16_t>(MessageType::kData),
             "unknown rendezvous message type " << type);
  Message message;
  message.type = static_cast<MessageType>(type);
  message.rank = static_cast<std::uint32_t>(reader.read(4, "rank"));
  message.world_size = static_cast<std::uint32_t>(reader.read(4, "world_size"));
  const auto token_bytes = static_cast<std::size_t>(reader.read(2, "token_bytes"));
  const auto payload_bytes = static_cast<std::size_t>(reader.read(4, "payload_bytes"));
  ZORO_CHECK(token_bytes <= kMaxTokenBytes, "rendezvous token of " << token_bytes
                                                                   << " bytes is oversized (limit "
                                                                   << kMaxTokenBytes << ")");
  ZORO_CHECK(payload_bytes <= kMaxPayloadBytes,
             "rendezvous payload of " << payload_bytes << " bytes is oversized (limit "
                                      << kMaxPayloadBytes << ")");
  ZORO_CHECK(reader.remaining() == token_bytes + payload_bytes,
             "rendezvous message length mismatch: header announces "
                 << token_bytes << " token + " << payload_bytes << " payload bytes, "
                 << reader.remaining() << " present");
  const auto token = reader.take(token_bytes, "token");
  message.token.assign(token.begin(), token.end());
  const auto payload = reader.take(payload_bytes, "payload");
  message.payload.assign(payload.begin(), payload.end());
  return message;
}

std::vector<std::uint8_t> encode_blob_list(const std::vector<std::vector<std::uint8_t>>& blobs) {
  std::vector<std::uint8_t> out;
  put(out, blobs.size(), 4);
  for (const auto& blob : blobs) {
    put(out, blob.size(), 4);
    out.insert(out.end(), blob.begin(), blob.end());
  }
  ZORO_CHECK(out.size() <= kMaxPayloadBytes, "gathered rendezvous blobs total "
                                                 << out.size() << " bytes, over the limit "
                                                 << kMaxPayloadBytes);
  return out;
}

std::vector<std::vector<std::uint8_t>> parse_blob_list(std::span<const std::uint8_t> payload,
                                                       std::size_t expected_count) {
  Reader reader(payload);
  const auto count = static_cast<std::size_t>(reader.read(4, "blob count"));
  ZORO_CHECK(count == expected_count,
             "rendezvous blob list holds " << count << " blobs, " << expected_count << " expected");
  std::vector<std::vector<std::uint8_t>> blobs;
  blobs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto bytes = static_cast<std::size_t>(reader.read(4, "blob size"));
    const auto blob = reader.take(bytes, "blob");
    blobs.emplace_back(blob.begin(), blob.end());
  }
  ZORO_CHECK(reader.remaining() == 0,
             "rendezvous blob list has " << reader.remaining() << " trailing bytes");
  return blobs;
}

}  // namespace zoro::comm::rendezvous

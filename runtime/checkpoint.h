// The checkpoint file: dir/zoro.ckpt, written atomically (a temporary name, fsync, rename),
// every part checksummed (CRC-32C), and read back only after all of it has been verified.
//
// Layout: "ZOROCKPT", u32 format version, u32 header length, the header (text, one
// key=value per line: fingerprints, counters, loss-scaler state, the parameters' names and
// shapes, the section table with each section's length and CRC), u32 CRC of the header, the
// sections' bytes in table order, and "ZOROEND\0". Integers are little-endian.
//
// Refusals (nothing is written into the caller's buffers then): a missing or unreadable file
// (IoError); a file that is not a zoro checkpoint, of another format version, truncated, or
// whose header or any section fails its checksum (IoError naming the part); one written by
// another model (InvalidArgument naming the first parameter that differs) or with another
// optimizer configuration (InvalidArgument naming the keys that differ).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace zoro {

struct CheckpointParam {
  std::string name;
  std::vector<std::int64_t> shape;
};

struct CheckpointState {
  std::uint64_t layout_fingerprint = 0;
  std::uint64_t config_fingerprint = 0;
  std::string config_toml;  // for messages naming what differs
  std::vector<CheckpointParam> params;
  std::size_t total_elems = 0;
  std::int64_t steps_done = 0;
  std::int64_t optimizer_t = 0;
  double loss_scale = 1;
  int good_steps = 0;
  bool upload_pending = false;
};

// A named run of bytes: the source when writing, the destination when reading.
struct CheckpointSection {
  std::string name;
  void* data = nullptr;
  std::size_t bytes = 0;
};

inline constexpr const char* kCheckpointFile = "zoro.ckpt";

// Creates `dir` if needed and writes dir/zoro.ckpt atomically.
void write_checkpoint(const std::string& dir, const CheckpointState& state,
                      const std::vector<CheckpointSection>& sections);

// Verifies dir/zoro.ckpt against `expect` (fingerprints, parameters, total_elems) and the
// sections (names and lengths), checks every checksum, and only then fills the sections.
// Returns the stored state.
CheckpointState read_checkpoint(const std::string& dir, const CheckpointState& expect,
                                const std::vector<CheckpointSection>& sections);

}  // namespace zoro

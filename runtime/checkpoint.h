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
//
// Many ranks (Note [Partitioned checkpoint] in runtime/engine_checkpoint.cpp): the N > 1 ranks
// write save number G (the directory's generation) at step S as one file per rank,
// dir/rank-<r>-of-<N>.step-<S>.gen-<G>.ckpt, in the same format (its header adds world_size,
// rank and the shard's flat range); once every one is complete rank 0 atomically replaces
// dir/manifest.txt, which names them, and then removes the files of older saves. A single rank
// writes dir/zoro.ckpt and no manifest, exactly as before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
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
  // Partitioned runs only (world_size > 1): which shard of the flat space the file holds.
  int world_size = 1;
  int rank = 0;
  std::size_t shard_begin = 0;
  std::size_t shard_end = 0;
};

// A named run of bytes: the source when writing, the destination when reading.
struct CheckpointSection {
  std::string name;
  void* data = nullptr;
  std::size_t bytes = 0;
};

inline constexpr const char* kCheckpointFile = "zoro.ckpt";
inline constexpr const char* kManifestFile = "manifest.txt";

// "rank-<rank>-of-<world>.step-<steps_done>.gen-<generation>.ckpt": the file of one rank of a
// partitioned run in save number `generation` of its directory.
std::string rank_checkpoint_file(int rank, int world, std::int64_t steps_done,
                                 std::int64_t generation);

// Creates `dir` if needed and writes dir/<file> atomically.
void write_checkpoint(const std::string& dir, const CheckpointState& state,
                      const std::vector<CheckpointSection>& sections,
                      const std::string& file = kCheckpointFile);

// Verifies dir/<file> against `expect` (fingerprints, parameters, total_elems, and for a
// partitioned file world size, rank and shard) and the sections (names and lengths), checks
// every checksum, calls `before_fill` (when set) with the stored state, and only then fills
// the sections: `before_fill` may still refuse (throw) with nothing written. Returns the
// stored state.
CheckpointState read_checkpoint(
    const std::string& dir, const CheckpointState& expect,
    const std::vector<CheckpointSection>& sections, const std::string& file = kCheckpointFile,
    const std::function<void(const CheckpointState&)>& before_fill = {});

// What rank 0 of a partitioned run writes after every rank file is complete.
struct CheckpointManifest {
  int world_size = 0;
  std::uint64_t layout_fingerprint = 0;
  std::uint64_t config_fingerprint = 0;
  std::int64_t steps_done = 0;
  // The save's number in its directory (0 in a manifest written before generations existed).
  std::int64_t generation = 0;
  // files[r]: rank r's file, a plain name inside the directory (world_size of them).
  std::vector<std::string> files;
};

// Writes dir/manifest.txt atomically (text, key=value lines and a CRC-32C of them).
void write_manifest(const std::string& dir, const CheckpointManifest& manifest);
// Reads dir/manifest.txt: nullopt when absent; IoError naming the file when unreadable,
// malformed (files must be world_size plain names) or failing its checksum.
std::optional<CheckpointManifest> read_manifest(const std::string& dir);

// The generation a new partitioned save into `dir` takes: one more than the manifest's and
// than that of every rank file present, so that a save never writes over an existing file,
// whatever the manifest says (an unreadable one is logged and skipped). 1 for a directory that
// does not exist yet. IoError when the directory cannot be listed.
std::int64_t next_checkpoint_generation(const std::string& dir);
// Removes from `dir` the rank files that `keep` does not name (older saves, an interrupted
// one, another world size's) and the temporary files of interrupted atomic writes of rank
// files or of the manifest. Best effort: a failure is logged, never thrown. Returns the number
// of files removed.
std::size_t remove_unlisted_rank_files(const std::string& dir,
                                       const CheckpointManifest& keep) noexcept;

}  // namespace zoro

// The flat parameter layout: every registered parameter gets a contiguous range of one flat
// element space, starting at an aligned offset, so that the fp32 master, the moments, the
// gradient accumulator and the half-precision working copy are each ONE array indexed the
// same way, and a bucket, an optimizer chunk or a rank's shard is just a range [a, b).
//
// Note [Flat alignment]: offsets are multiples of kFlatAlignElems (64 elements): 256 B in
// fp32 and 128 B in 16-bit types, so every parameter starts on a cache line and a full SIMD
// vector in every array, and device kernels can use vector loads. The gaps are zero-filled
// padding that the optimizer updates harmlessly (zero gradient, zero weight).
//
// Not thread-safe while parameters are being added; read-only (and shareable) afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zoro::offload {

inline constexpr std::size_t kFlatAlignElems = 64;

struct ParamId {
  std::uint32_t value = 0;
  friend bool operator==(ParamId, ParamId) = default;
};

struct ParamSlot {
  ParamId id;
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t numel = 0;   // product of the shape
  std::size_t offset = 0;  // first element in the flat space (a multiple of kFlatAlignElems)
  std::size_t end() const { return offset + numel; }
};

class FlatLayout {
 public:
  // Registers a parameter. Throws InvalidArgument for an empty or duplicate name, an empty
  // shape, a dimension < 1, or a size that overflows.
  ParamId add(std::string name, std::vector<std::int64_t> shape);

  // The element count of `shape`, validated as add() validates it (InvalidArgument naming
  // `name` for an empty shape, a dimension < 1 or an overflow).
  static std::size_t checked_numel(const std::string& name, const std::vector<std::int64_t>& shape);

  std::size_t size() const { return slots_.size(); }
  const ParamSlot& slot(ParamId id) const;
  // Throws InvalidArgument naming the parameter when absent.
  const ParamSlot& find(std::string_view name) const;
  const std::vector<ParamSlot>& slots() const { return slots_; }

  // Elements of the flat space, padding included (a multiple of kFlatAlignElems).
  std::size_t total_elems() const { return total_elems_; }
  // Elements of the parameters alone.
  std::size_t param_elems() const { return param_elems_; }

  // A digest of names, shapes and order: two layouts with equal fingerprints index the flat
  // space identically. Stored in checkpoints and compared across ranks.
  std::uint64_t fingerprint() const;

  // [begin, end) of rank `rank`'s shard among `world` ranks: contiguous, aligned to
  // kFlatAlignElems, sizes differing by at most one alignment unit (uneven shards allowed).
  struct Range {
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const { return end - begin; }
  };
  Range shard(int rank, int world) const;

 private:
  std::vector<ParamSlot> slots_;
  std::unordered_map<std::string, std::uint32_t> by_name_;
  std::size_t total_elems_ = 0;
  std::size_t param_elems_ = 0;
};

}  // namespace zoro::offload

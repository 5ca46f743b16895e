#include "offload/layout.h"

#include <limits>

#include "runtime/base/check.h"
#include "runtime/base/units.h"

namespace zoro::offload {

std::size_t FlatLayout::checked_numel(const std::string& name,
                                      const std::vector<std::int64_t>& shape) {
  ZORO_CHECK(!shape.empty(), "parameter '" << name << "' has an empty shape");
  std::size_t numel = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    ZORO_CHECK(shape[d] >= 1, "parameter '" << name << "': dimension " << d << " is " << shape[d]
                                            << " (must be >= 1)");
    const auto dim = static_cast<std::size_t>(shape[d]);
    ZORO_CHECK(numel <= (std::size_t{1} << 48) / dim,
               "parameter '" << name << "': size overflows (more than 2^48 elements)");
    numel *= dim;
  }
  return numel;
}

ParamId FlatLayout::add(std::string name, std::vector<std::int64_t> shape) {
  ZORO_CHECK(!name.empty(), "parameter name is empty");
  ZORO_CHECK(!by_name_.contains(name), "parameter '" << name << "' is registered twice");
  ZORO_CHECK(slots_.size() < std::numeric_limits<std::uint32_t>::max(), "too many parameters");
  const std::size_t numel = checked_numel(name, shape);
  const std::size_t offset = total_elems_;
  ZORO_CHECK(offset + numel < (std::size_t{1} << 52), "flat parameter space overflows");
  const ParamId id{static_cast<std::uint32_t>(slots_.size())};
  by_name_.emplace(name, id.value);
  slots_.push_back(ParamSlot{id, std::move(name), std::move(shape), numel, offset});
  total_elems_ = align_up(offset + numel, kFlatAlignElems);
  param_elems_ += numel;
  return id;
}

const ParamSlot& FlatLayout::slot(ParamId id) const {
  ZORO_CHECK(id.value < slots_.size(),
             "parameter id " << id.value << " is not registered (" << slots_.size() << " are)");
  return slots_[id.value];
}

const ParamSlot& FlatLayout::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  ZORO_CHECK(it != by_name_.end(), "no parameter named '" << name << "'");
  return slots_[it->second];
}

std::uint64_t FlatLayout::fingerprint() const {
  // FNV-1a over (name, rank, dims...) of every slot, in order.
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const void* data, std::size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < bytes; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  };
  for (const auto& s : slots_) {
    mix(s.name.data(), s.name.size());
    const std::uint64_t rank = s.shape.size();
    mix(&rank, sizeof rank);
    mix(s.shape.data(), s.shape.size() * sizeof(std::int64_t));
  }
  return h;
}

FlatLayout::Range FlatLayout::shard(int rank, int world) const {
  ZORO_CHECK(world >= 1, "world size " << world << " must be >= 1");
  ZORO_CHECK(rank >= 0 && rank < world, "rank " << rank << " is outside [0, " << world << ")");
  const std::size_t units = total_elems_ / kFlatAlignElems;
  const auto w = static_cast<std::size_t>(world);
  const auto r = static_cast<std::size_t>(rank);
  const std::size_t base = units / w;
  const std::size_t extra = units % w;  // the first `extra` ranks get one unit more
  const std::size_t begin_units = r * base + std::min(r, extra);
  const std::size_t end_units = begin_units + base + (r < extra ? 1 : 0);
  return Range{begin_units * kFlatAlignElems, end_units * kFlatAlignElems};
}

}  // namespace zoro::offload

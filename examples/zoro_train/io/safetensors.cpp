#include "examples/zoro_train/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"
#include "runtime/base/half.h"

namespace zoro::train {

namespace {

// The dtypes the format defines that zoro does not read: Unsupported, not malformed.
bool known_unsupported_dtype(const std::string& name) {
  static const std::set<std::string> kNames = {
      "F64",  "I64",     "U64",     "I32",     "U32", "I16",     "U16",     "I8", "U8",
      "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return kNames.count(name) == 1;
}

// numel x itemsize, or nullopt on overflow.
bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = MappedFile::open(path);
  const std::size_t size = f.file_.size();
  const auto fail = [&](const std::string& why) {
    ZORO_THROW(IoError, "safetensors file '" << path << "': " << why);
  };
  if (size < 8)
    fail("truncated: " + std::to_string(size) + " bytes, less than the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(f.file_.data()[i]);
  if (n > kMaxHeaderBytes) {
    fail("header length " + std::to_string(n) + " exceeds the limit of " +
         std::to_string(kMaxHeaderBytes) + " bytes (corrupt or not a safetensors file)");
  }
  if (n > size - 8) {
    fail("truncated: the header claims " + std::to_string(n) + " bytes, the file has " +
         std::to_string(size - 8) + " after the length");
  }
  f.data_offset_ = 8 + static_cast<std::size_t>(n);
  const std::size_t data_bytes = size - f.data_offset_;
  const std::string_view header = f.file_.text().substr(8, static_cast<std::size_t>(n));

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header.begin(), header.end());
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("the header is not a JSON object");

  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("__metadata__ is not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail("__metadata__ key '" + key + "' is not a string");
        f.metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const auto bad = [&](const std::string& why) { fail("tensor '" + name + "': " + why); };
    if (!entry.is_object()) bad("its entry is not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) bad(std::string("no \"") + field + "\"");
    }
    TensorInfo t;
    t.name = name;
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string()) bad("\"dtype\" is not a string");
    const std::string dtype_name = dtype.get<std::string>();
    if (dtype_name == "F32") {
      t.dtype = DType::kF32;
    } else if (dtype_name == "F16") {
      t.dtype = DType::kF16;
    } else if (dtype_name == "BF16") {
      t.dtype = DType::kBF16;
    } else if (known_unsupported_dtype(dtype_name)) {
      ZORO_THROW(Unsupported, "safetensors file '" << path << "': tensor '" << name
                                                   << "' has dtype " << dtype_name
                                                   << "; zoro reads F32, F16 and BF16");
    } else {
      bad("unknown dtype '" + dtype_name + "'");
    }
    const auto& shape = entry["shape"];
    if (!shape.is_array()) bad("\"shape\" is not an array");
    t.numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) {
        bad("\"shape\" " + shape.dump() + " has an entry that is not a non-negative integer");
      }
      t.shape.push_back(d.get<std::int64_t>());
      if (!checked_mul(t.numel, static_cast<std::size_t>(t.shape.back()), t.numel)) {
        bad("\"shape\" " + shape.dump() + " overflows");
      }
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      bad("\"data_offsets\" is not [begin, end] of non-negative integers");
    }
    t.data_begin = offsets[0].get<std::size_t>();
    t.data_end = offsets[1].get<std::size_t>();
    if (t.data_begin > t.data_end || t.data_end > data_bytes) {
      bad("\"data_offsets\" [" + std::to_string(t.data_begin) + ", " + std::to_string(t.data_end) +
          "] are not inside the " + std::to_string(data_bytes) + " bytes of data");
    }
    std::size_t expected = 0;
    if (!checked_mul(t.numel, size_of(t.dtype), expected) ||
        t.data_end - t.data_begin != expected) {
      bad("holds " + std::to_string(t.data_end - t.data_begin) + " bytes, but shape " +
          shape.dump() + " of " + dtype_name + " needs " + std::to_string(expected));
    }
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
  });
  for (std::size_t i = 1; i < f.tensors_.size(); ++i) {
    const TensorInfo& a = f.tensors_[i - 1];
    const TensorInfo& b = f.tensors_[i];
    // Empty tensors occupy no bytes and overlap nothing.
    if (a.data_end > b.data_begin && a.data_end > a.data_begin && b.data_end > b.data_begin) {
      fail("tensors '" + a.name + "' [" + std::to_string(a.data_begin) + ", " +
           std::to_string(a.data_end) + ") and '" + b.name + "' [" + std::to_string(b.data_begin) +
           ", " + std::to_string(b.data_end) + ") overlap");
    }
  }
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  ZORO_CHECK(t != nullptr, "safetensors file '" << path() << "' has no tensor '" << name << "'");
  return *t;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& tensor) const {
  return file_.bytes().subspan(data_offset_ + tensor.data_begin,
                               tensor.data_end - tensor.data_begin);
}

std::vector<float> SafetensorsFile::read_as_f32(const std::string& name) const {
  const TensorInfo& t = at(name);
  const std::span<const std::byte> raw = bytes(t);
  std::vector<float> out(t.numel);
  if (t.dtype == DType::kF32) {
    if (t.numel > 0) std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  }
  for (std::size_t i = 0; i < t.numel; ++i) {
    std::uint16_t h = 0;
    std::memcpy(&h, raw.data() + 2 * i, 2);
    out[i] = t.dtype == DType::kF16 ? fp16_to_float(h) : bf16_to_float(h);
  }
  return out;
}

void write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> names;
  std::size_t offset = 0;
  for (const TensorView& t : tensors) {
    ZORO_CHECK(!t.name.empty() && t.name != "__metadata__",
               "'" << path << "': tensor name '" << t.name << "' is not allowed");
    ZORO_CHECK(names.insert(t.name).second,
               "'" << path << "': tensor '" << t.name << "' appears twice");
    std::size_t numel = 1;
    for (const std::int64_t d : t.shape) {
      ZORO_CHECK(d >= 0, "'" << path << "': tensor '" << t.name << "' has dimension " << d);
      numel *= static_cast<std::size_t>(d);
    }
    ZORO_CHECK(t.data.size() == numel * size_of(t.dtype),
               "'" << path << "': tensor '" << t.name << "' has " << t.data.size()
                   << " bytes, its shape of " << safetensors_dtype_name(t.dtype) << " needs "
                   << numel * size_of(t.dtype));
    header[t.name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::uint64_t n = text.size();
  std::byte length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
  AtomicFileWriter out(path);
  out.write(length, 8);
  out.write(text.data(), text.size());
  for (const TensorView& t : tensors) {
    if (!t.data.empty()) out.write(t.data.data(), t.data.size());
  }
  out.commit();
}

}  // namespace zoro::train

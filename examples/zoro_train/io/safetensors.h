// safetensors files: read (memory-mapped, validated) and write (atomically).
//
// The format: an 8-byte little-endian header length N, N bytes of JSON, then the data. The
// JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into
// the data, after the header) and may hold "__metadata__", a map of strings to strings.
//
// SafetensorsFile::open validates everything before anything is read, and throws
//   IoError           the file cannot be opened or mapped; it is shorter than its header says
//                     (truncated); the header length exceeds kMaxHeaderBytes; the header is
//                     not valid JSON or not an object; an entry is malformed (missing or
//                     mistyped field, negative or overflowing shape, offsets reversed or past
//                     the end of the data, end - begin != numel x itemsize, two tensors whose
//                     bytes overlap, a non-string metadata value)
//   Unsupported       a tensor of a dtype zoro does not read (F64, I64, F8_E4M3, ...; only
//                     F32, F16 and BF16 are), naming the tensor and the dtype
// each naming the path and, where there is one, the tensor.
// Element order in the data is row-major and little-endian, as the format defines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "examples/zoro_train/io/mapped_file.h"
#include "runtime/base/dtype.h"

namespace zoro::train {

inline constexpr std::size_t kMaxHeaderBytes = std::size_t{100} << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::size_t numel = 1;
  std::size_t data_begin = 0;  // byte offsets into the data section
  std::size_t data_end = 0;
};

// "F32", "F16", "BF16" -- the names the format uses.
const char* safetensors_dtype_name(DType dtype);

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  // Tensors in order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // The tensor, InvalidArgument naming the file and the tensor when absent.
  const TensorInfo& at(const std::string& name) const;
  // The tensor's raw bytes inside the map (not aligned: memcpy out of it).
  std::span<const std::byte> bytes(const TensorInfo& tensor) const;
  // The tensor converted to fp32 (F16/BF16 widened exactly).
  std::vector<float> read_as_f32(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::size_t data_offset_ = 0;  // 8 + N
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: its bytes must be numel(shape) x size_of(dtype), row-major, in the
// machine's (little-endian) order.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
};

// Writes `tensors` (in the order given) and `metadata` to `path` atomically: a crash leaves
// the old file or the new one. The header is padded with spaces to a multiple of 8 bytes.
// InvalidArgument for an empty or duplicate name, "__metadata__" as a name, a negative
// dimension, or data of the wrong size (naming the tensor); IoError when writing fails.
void write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace zoro::train

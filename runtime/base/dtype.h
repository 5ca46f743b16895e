// Element types zoro moves and stores: fp32, and the two 16-bit formats (fp16, bf16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace zoro {

enum class DType : std::uint8_t { kF32, kF16, kBF16 };

constexpr std::size_t size_of(DType t) { return t == DType::kF32 ? 4 : 2; }
constexpr const char* to_string(DType t) {
  switch (t) {
    case DType::kF32:
      return "fp32";
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}
// "fp32"/"float32"/"f32", "fp16"/"float16"/"f16"/"half", "bf16"/"bfloat16"; throws
// InvalidArgument naming `what` and the text otherwise.
DType parse_dtype(std::string_view text, std::string_view what = "dtype");

}  // namespace zoro

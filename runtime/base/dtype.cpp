#include "runtime/base/dtype.h"

#include "runtime/base/check.h"

namespace zoro {

DType parse_dtype(std::string_view text, std::string_view what) {
  if (text == "fp32" || text == "float32" || text == "f32") return DType::kF32;
  if (text == "fp16" || text == "float16" || text == "f16" || text == "half") return DType::kF16;
  if (text == "bf16" || text == "bfloat16") return DType::kBF16;
  ZORO_THROW(InvalidArgument, what << "='" << text << "' is not a dtype (fp32, fp16, bf16)");
}

}  // namespace zoro

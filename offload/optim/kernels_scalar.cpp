// The scalar path: plain C++ at the default flags, for any x86-64 CPU, and the definition the
// SIMD paths must equal bit for bit (std::fma where they use an FMA; half.h conversions).
#include <cmath>
#include <cstdint>

#include "offload/optim/kernels_impl.h"
#include "runtime/base/half.h"

namespace zoro::optim::detail {
namespace {

struct ScalarV {
  using R = float;
  static constexpr std::size_t kWidth = 1;
  static R set1(float x) { return x; }
  static R load_f32(const float* p) { return *p; }
  static void store_f32(float* p, R x) { *p = x; }
  static R load_bf16(const std::uint16_t* p) { return bf16_to_float(*p); }
  static void store_bf16(std::uint16_t* p, R x) { *p = float_to_bf16(x); }
  static R load_f16(const std::uint16_t* p) { return fp16_to_float(*p); }
  static void store_f16(std::uint16_t* p, R x) { *p = float_to_fp16(x); }
  static R mul(R a, R b) { return a * b; }
  static R add(R a, R b) { return a + b; }
  static R div(R a, R b) { return a / b; }
  static R sqrt(R a) { return std::sqrt(a); }
  static R fmadd(R a, R b, R c) { return std::fma(a, b, c); }
  static R sign(R a) { return a > 0.f ? 1.f : (a < 0.f ? -1.f : a); }
};

}  // namespace

const KernelTable kScalarKernels = make_table<ScalarV>();

}  // namespace zoro::optim::detail

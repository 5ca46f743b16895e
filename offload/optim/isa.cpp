#include "offload/optim/isa.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "offload/optim/kernels.h"
#include "runtime/base/check.h"

namespace zoro::optim {
namespace {

constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
  bool avx512_bf16 = false;
};

// cpuid, once. __builtin_cpu_supports also checks XGETBV, i.e. that the OS saves the YMM/ZMM
// state, so a feature it reports is usable.
const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    __builtin_cpu_init();
    CpuFeatures f;
    f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
    return f;
  }();
  return features;
}

// -1: no set_isa() in force; else the forced Isa.
std::atomic<int> g_forced{-1};

Isa isa_from_environment() {
  static const Isa from_env = [] {
    const char* env = std::getenv("ZORO_CPU_ISA");
    if (env == nullptr || *env == '\0') return best_isa();
    bool known = false;
    for (Isa candidate : kAllIsas) known = known || std::string_view(env) == isa_name(candidate);
    ZORO_CHECK(known, "ZORO_CPU_ISA=" << env << " is not one of scalar, avx2, avx512, avx512bf16");
    const Isa isa = parse_isa(env);
    ZORO_CHECK(isa_supported(isa), "ZORO_CPU_ISA=" << env
                                                   << " names an instruction set this CPU "
                                                      "does not have (best here: "
                                                   << isa_name(best_isa()) << ")");
    return isa;
  }();
  return from_env;
}

}  // namespace

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512bf16";
  }
  return "?";
}

Isa parse_isa(std::string_view text) {
  for (Isa isa : kAllIsas) {
    if (text == isa_name(isa)) return isa;
  }
  ZORO_THROW(InvalidArgument, "unknown CPU instruction set '"
                                  << text << "' (expected scalar, avx2, avx512 or avx512bf16)");
}

bool isa_supported(Isa isa) noexcept {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return f.avx2;
    case Isa::kAvx512:
      return f.avx512;
    case Isa::kAvx512Bf16:
      return f.avx512_bf16;
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

Isa best_isa() noexcept {
  Isa best = Isa::kScalar;
  for (Isa isa : kAllIsas) {
    if (isa_supported(isa)) best = isa;
  }
  return best;
}

Isa current_isa() {
  const int forced = g_forced.load(std::memory_order_acquire);
  if (forced >= 0) return static_cast<Isa>(forced);
  return isa_from_environment();
}

void set_isa(Isa isa) {
  ZORO_CHECK(isa_supported(isa), "set_isa(" << isa_name(isa)
                                            << "): this CPU does not have it "
                                               "(best here: "
                                            << isa_name(best_isa()) << ")");
  g_forced.store(static_cast<int>(isa), std::memory_order_release);
}

void reset_isa() noexcept { g_forced.store(-1, std::memory_order_release); }

namespace detail {

const KernelTable& kernels_for(Isa isa) {
  ZORO_CHECK(isa_supported(isa), "instruction set " << isa_name(isa) << " is not available");
  switch (isa) {
    case Isa::kScalar:
      return kScalarKernels;
    case Isa::kAvx2:
      return kAvx2Kernels;
    case Isa::kAvx512:
      return kAvx512Kernels;
    case Isa::kAvx512Bf16:
      return kAvx512Bf16Kernels;
  }
  ZORO_ASSERT(false);
  return kScalarKernels;
}

}  // namespace detail
}  // namespace zoro::optim

// The CPU instruction set the optimizers run with, chosen once at run time.
//
// Contract:
// - zoro is never compiled with -march=native. Each SIMD path lives in its own translation
//   unit compiled with per-file flags, and is only ever called after cpuid (through
//   __builtin_cpu_supports, which also checks that the OS saves the wide registers) has said
//   that this CPU has every extension it was compiled for.
// - The path in force is, in order: the one set by set_isa(), else the one named by the
//   environment variable ZORO_CPU_ISA (scalar | avx2 | avx512 | avx512bf16, read once), else
//   best_isa(). Naming a path that this CPU cannot run is an InvalidArgument, never a silent
//   fallback.
// - Every path gives bit-identical results for every input (see Note [Bit-identical paths]
//   in offload/optim/cpu_optimizer.h), so the choice changes speed only.
// - Thread-safe: the path is read with an atomic load at each optimizer call; set_isa() while
//   an optimizer call is running affects the next call only.
#pragma once

#include <string_view>
#include <vector>

namespace zoro::optim {

enum class Isa {
  kScalar,      // plain C++ (std::fma, std::sqrt): any x86-64 CPU
  kAvx2,        // AVX2 + FMA + F16C; bf16 converted with integer shifts (AMD, older Intel)
  kAvx512,      // AVX-512 F/BW/VL/DQ + FMA + F16C; bf16 converted with integer ops
  kAvx512Bf16,  // as kAvx512, plus the AVX512-BF16 conversion instruction
};

// "scalar", "avx2", "avx512", "avx512bf16".
const char* isa_name(Isa isa) noexcept;
// The inverse of isa_name (case-sensitive); throws InvalidArgument naming the text.
Isa parse_isa(std::string_view text);

// Whether this CPU (and OS) can run `isa`.
bool isa_supported(Isa isa) noexcept;
// Every path this CPU can run, scalar first.
std::vector<Isa> supported_isas();
// The fastest path this CPU can run.
Isa best_isa() noexcept;

// The path in force (see the contract). Throws InvalidArgument when ZORO_CPU_ISA names an
// unknown or unsupported path.
Isa current_isa();
// Forces a path for the whole process (tests, benchmarks). Throws InvalidArgument when this
// CPU cannot run it.
void set_isa(Isa isa);
// Forgets set_isa(): back to ZORO_CPU_ISA or best_isa().
void reset_isa() noexcept;

}  // namespace zoro::optim

// Scalar conversions between fp32 and the two 16-bit float formats zoro moves around:
// bf16 (1-8-7, fp32's exponent range) and IEEE fp16 (1-5-10).
//
// Contract (every function is constexpr, noexcept and bit-exact):
// - fp32 -> bf16 / fp16 round to nearest, ties to even, whatever the FPU's rounding mode.
//   Subnormal inputs and results are kept (never flushed to zero); overflow gives +-Inf.
// - Inf stays Inf with its sign. NaN stays NaN with its sign, is made quiet, and keeps the top
//   bits of its payload. These NaN rules are exactly the ones of the x86 instructions
//   (VCVTPS2PH, VCVTPH2PS, VCVTNEPS2BF16), so that the SIMD paths of offload/optim are
//   bit-identical to these functions for every input.
// - bf16 / fp16 -> fp32 is exact (every 16-bit value is an fp32 value), NaN made quiet.
//
// The 16-bit values travel as std::uint16_t bit patterns: the caller decides what a buffer
// holds, and there is no arithmetic on them.
#pragma once

#include <bit>
#include <cstdint>

namespace zoro {

// ---- bf16 ----------------------------------------------------------------------------------

constexpr std::uint16_t float_to_bf16(float value) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign and top payload, make quiet
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry into the exponent
  // is the correct result (it rounds up to the next binade, or to Inf past the largest).
  const std::uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<std::uint16_t>((bits + 0x7FFFu + lsb) >> 16);
}

constexpr float bf16_to_float(std::uint16_t half) noexcept {
  std::uint32_t bits = static_cast<std::uint32_t>(half) << 16;
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) bits |= 0x00400000u;  // quiet NaN
  return std::bit_cast<float>(bits);
}

// ---- fp16 ----------------------------------------------------------------------------------

constexpr std::uint16_t float_to_fp16(float value) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // Inf, or NaN (quiet, top 9 payload bits kept)
    if (abs == 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x03FFu));
  }
  // 0x477FF000 is the midpoint between 65504 (the largest fp16) and 65536: from there up the
  // value rounds to Inf (the tie rounds to the even neighbour, which is Inf).
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (abs < 0x38800000u) {  // below 2^-14: an fp16 subnormal (or zero)
    // The result is round(|x| / 2^-24) in units of the smallest subnormal. |x| = m * 2^(e-150)
    // with the implicit bit in m; shift m right by (126 - e) + 1 ... done with integers.
    const std::uint32_t exp = abs >> 23;
    if (exp < 102) return static_cast<std::uint16_t>(sign);  // < 2^-25: rounds to zero
    const std::uint32_t mant = (abs & 0x007FFFFFu) | 0x00800000u;
    const std::uint32_t shift = 126u - exp;  // 14..24: value = mant >> shift (units 2^-24)
    const std::uint32_t kept = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u);
    const std::uint32_t half_way = 1u << (shift - 1u);
    const std::uint32_t round_up = (rest > half_way || (rest == half_way && (kept & 1u))) ? 1u : 0u;
    return static_cast<std::uint16_t>(sign | (kept + round_up));  // may carry to 0x0400: ok
  }
  // Normal range: rebias the exponent (127 -> 15) and round 13 mantissa bits away; a carry
  // into the exponent is again the correct result.
  const std::uint32_t rebased = abs - ((127u - 15u) << 23);
  const std::uint32_t lsb = (rebased >> 13) & 1u;
  return static_cast<std::uint16_t>(sign | ((rebased + 0x0FFFu + lsb) >> 13));
}

constexpr float fp16_to_float(std::uint16_t half) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exp = (half >> 10) & 0x1Fu;
  std::uint32_t mant = half & 0x03FFu;
  if (exp == 0x1Fu) {  // Inf or NaN (quiet)
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u));
  }
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalise. value = mant * 2^-24.
    std::uint32_t e = 127u - 15u + 1u;
    while ((mant & 0x0400u) == 0) {
      mant <<= 1;
      --e;
    }
    return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x03FFu) << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 127u - 15u) << 23) | (mant << 13));
}

}  // namespace zoro

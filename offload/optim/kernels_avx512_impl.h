// Internal: the AVX-512 vector type, shared by kernels_avx512.cpp (bf16 by integer ops) and
// kernels_avx512_bf16.cpp (VCVTNEPS2BF16), each compiled with its own flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "offload/optim/kernels_impl.h"

namespace zoro::optim::detail {
namespace {

template <bool kNativeBf16>
struct Avx512V {
  using R = __m512;
  static constexpr std::size_t kWidth = 16;
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load_f32(const float* p) { return _mm512_loadu_ps(p); }
  static void store_f32(float* p, R x) { _mm512_storeu_ps(p, x); }
  static R load_bf16(const std::uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  // Round to nearest even with integers; NaN -> (bits >> 16) | 0x40 (half.h's rule).
  static __m256i bf16_by_integers(R x) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i high = _mm512_srli_epi32(bits, 16);
    const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
  }
  static __m256i to_bf16(R x) {
    if constexpr (kNativeBf16) {
#if defined(__AVX512BF16__)
      // VCVTNEPS2BF16 rounds to nearest even and quiets NaN exactly like half.h, but treats
      // fp32 subnormal inputs as zero; those (rare) lanes take the integer result instead.
      __m256i out = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x));
      const __mmask16 subnormal = _mm512_fpclass_ps_mask(x, 0x20);  // 0x20: denormal
      if (subnormal != 0) [[unlikely]] {
        out = _mm256_mask_mov_epi16(out, subnormal, bf16_by_integers(x));
      }
      return out;
#else
      static_assert(!kNativeBf16, "compile this file with -mavx512bf16");
#endif
    } else {
      return bf16_by_integers(x);
    }
  }
  static void store_bf16(std::uint16_t* p, R x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(x));
  }
  static constexpr bool kStreamHalf = true;
  static void stream_bf16(std::uint16_t* p, R x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), to_bf16(x));
  }
  static void stream_f16(std::uint16_t* p, R x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static void fence() { _mm_sfence(); }
  static R load_f16(const std::uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_f16(std::uint16_t* p, R x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R sqrt(R a) { return _mm512_sqrt_ps(a); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R sign(R a) {
    const R zero = _mm512_setzero_ps();
    R r = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, zero, _CMP_GT_OQ), _mm512_set1_ps(1.f));
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ), _mm512_set1_ps(-1.f));
  }
};

}  // namespace
}  // namespace zoro::optim::detail

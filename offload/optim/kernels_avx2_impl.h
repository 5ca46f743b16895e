// Internal: the AVX2 + FMA + F16C vector type, used by kernels_avx2.cpp (and the benchmark's
// roofline kernel); include only from a file compiled with -mavx2 -mfma -mf16c.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "offload/optim/kernels_impl.h"

namespace zoro::optim::detail {
namespace {

struct Avx2V {
  using R = __m256;
  static constexpr std::size_t kWidth = 8;
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load_f32(const float* p) { return _mm256_loadu_ps(p); }
  static void store_f32(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R load_bf16(const std::uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // Round to nearest even by adding 0x7FFF + the kept lsb; NaN -> (bits >> 16) | 0x40, as
  // half.h and VCVTNEPS2BF16 do.
  static __m128i to_bf16(R x) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i high = _mm256_srli_epi32(bits, 16);
    const __m256i lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), nan);
    // packus works per 128-bit lane: quads are [r0-3, r0-3, r4-7, r4-7]; keep quads 0 and 2.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    return _mm256_castsi256_si128(packed);
  }
  static void store_bf16(std::uint16_t* p, R x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_bf16(x));
  }
  static constexpr bool kStreamHalf = true;
  static void stream_bf16(std::uint16_t* p, R x) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), to_bf16(x));
  }
  static void stream_f16(std::uint16_t* p, R x) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static void fence() { _mm_sfence(); }
  static R load_f16(const std::uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_f16(std::uint16_t* p, R x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R sqrt(R a) { return _mm256_sqrt_ps(a); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R sign(R a) {
    const R zero = _mm256_setzero_ps();
    R r = _mm256_blendv_ps(a, _mm256_set1_ps(1.f), _mm256_cmp_ps(a, zero, _CMP_GT_OQ));
    return _mm256_blendv_ps(r, _mm256_set1_ps(-1.f), _mm256_cmp_ps(a, zero, _CMP_LT_OQ));
  }
};

}  // namespace
}  // namespace zoro::optim::detail

// Internal: the optimizers' math, written once over a vector abstraction V and instantiated by
// each kernels_<isa>.cpp with its own V. See Note [Bit-identical paths] (cpu_optimizer.h).
//
// V provides: R (the register type), kWidth, set1, load/store of fp32, bf16 and fp16 (16-bit
// values as raw bits), mul, add, fmadd(a, b, c) = a * b + c rounded once, div, sqrt, and
// sign (+1, -1, or the input itself for +-0 and NaN); vector V's also kStreamHalf,
// stream_bf16 / stream_f16 (non-temporal stores to an address aligned to kWidth * 2 bytes)
// and fence (orders those stores before later ones).
//
// Everything here has internal linkage (an unnamed namespace): each including translation unit
// gets its own copy, compiled with its own flags, and the linker can never swap an AVX-512
// copy into the scalar path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "offload/optim/kernels.h"

namespace zoro::optim::detail {
namespace {

template <DType D>
using DTag = std::integral_constant<DType, D>;

template <class F>
inline void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      f(DTag<DType::kF32>{});
      break;
    case DType::kF16:
      f(DTag<DType::kF16>{});
      break;
    case DType::kBF16:
      f(DTag<DType::kBF16>{});
      break;
  }
}

template <class F>
inline void with_bool(bool value, F&& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <class V, DType D>
inline typename V::R load_at(const void* base, std::size_t i) {
  if constexpr (D == DType::kF32) {
    return V::load_f32(static_cast<const float*>(base) + i);
  } else if constexpr (D == DType::kBF16) {
    return V::load_bf16(static_cast<const std::uint16_t*>(base) + i);
  } else {
    return V::load_f16(static_cast<const std::uint16_t*>(base) + i);
  }
}

template <class V, DType D>
inline void store_at(void* base, std::size_t i, typename V::R x) {
  if constexpr (D == DType::kF32) {
    V::store_f32(static_cast<float*>(base) + i, x);
  } else if constexpr (D == DType::kBF16) {
    V::store_bf16(static_cast<std::uint16_t*>(base) + i, x);
  } else {
    V::store_f16(static_cast<std::uint16_t*>(base) + i, x);
  }
}

constexpr std::size_t bytes_of(DType d) { return d == DType::kF32 ? 4 : 2; }

// The pointers one vector step reads and writes; a tail step points them at padded copies.
struct Ptrs {
  float* master;
  void* s1;
  void* s2;
  const void* grad;
  void* half;
};

// Stores x as H at base[i]: with a non-temporal store when kStream (base + i aligned to the
// store's width; the half copy is write-only here and read next by the DMA engine, so it
// need not be read into the cache first), with a plain store otherwise.
template <class V, DType H, bool kStream>
inline void store_half(void* base, std::size_t i, typename V::R x) {
  auto* p = static_cast<std::uint16_t*>(base) + i;
  if constexpr (kStream && H == DType::kBF16) {
    V::stream_bf16(p, x);
  } else if constexpr (kStream) {
    V::stream_f16(p, x);
  } else {
    store_at<V, H>(base, i, x);
  }
}

// One vector step over elements [i, i + n), n < kWidth, through zero-padded local copies.
template <class V, DType G, DType S, DType H, bool kTwoStates, bool kHalf, class Step>
inline void padded_step(const KernelArgs& a, std::size_t i, std::size_t n, Step& step) {
  constexpr std::size_t W = V::kWidth;
  alignas(64) float p[W] = {};
  alignas(64) unsigned char s1[W * 4] = {};
  alignas(64) unsigned char s2[W * 4] = {};
  alignas(64) unsigned char g[W * 4] = {};
  alignas(64) unsigned char h[W * 2] = {};
  std::memcpy(p, a.master + i, n * 4);
  std::memcpy(s1, static_cast<const unsigned char*>(a.state1) + i * bytes_of(S), n * bytes_of(S));
  if constexpr (kTwoStates) {
    std::memcpy(s2, static_cast<const unsigned char*>(a.state2) + i * bytes_of(S), n * bytes_of(S));
  }
  std::memcpy(g, static_cast<const unsigned char*>(a.grad) + i * bytes_of(G), n * bytes_of(G));
  const Ptrs local{p, s1, s2, g, kHalf ? h : nullptr};
  step(local, 0, std::false_type{});
  std::memcpy(a.master + i, p, n * 4);
  std::memcpy(static_cast<unsigned char*>(a.state1) + i * bytes_of(S), s1, n * bytes_of(S));
  if constexpr (kTwoStates) {
    std::memcpy(static_cast<unsigned char*>(a.state2) + i * bytes_of(S), s2, n * bytes_of(S));
  }
  if constexpr (kHalf) {
    std::memcpy(static_cast<unsigned char*>(a.half_out) + i * bytes_of(H), h, n * bytes_of(H));
  }
}

// Runs step(ptrs, i, stream) over [begin, end) a vector at a time. Partial vectors (the head
// before the half copy's first aligned vector, and the tail) are copied into zero-padded local
// buffers, stepped by the same code, and copied back, so an element's result never depends on
// where it sits (Note [Bit-identical paths]). `stream` (a std::bool_constant) says whether the
// half copy may be stored non-temporally (full vectors with a half copy only); the streaming
// stores are fenced before returning, so they are visible to whoever learns that the range
// is done.
template <class V, DType G, DType S, DType H, bool kTwoStates, bool kHalf, class Step>
inline void for_each_vector(const KernelArgs& a, std::size_t begin, std::size_t end, Step&& step) {
  constexpr std::size_t W = V::kWidth;
  const Ptrs ptrs{a.master, a.state1, a.state2, a.grad, a.half_out};
  std::size_t i = begin;
  if constexpr (W == 1) {
    for (; i < end; ++i) step(ptrs, i, std::false_type{});
  } else if constexpr (kHalf && V::kStreamHalf) {
    // Peel elements until the half copy is aligned to one vector's store (W * 2 bytes).
    const auto addr = reinterpret_cast<std::uintptr_t>(static_cast<std::uint16_t*>(a.half_out) + i);
    const std::size_t misalign = (addr / 2) % W;
    if (misalign != 0) {
      // (No std::min here: a std:: template instantiated in a SIMD file could be the copy the
      // linker keeps for the whole program.)
      const std::size_t head = W - misalign < end - i ? W - misalign : end - i;
      padded_step<V, G, S, H, kTwoStates, kHalf>(a, i, head, step);
      i += head;
    }
    const std::size_t full_end = i + (end - i) / W * W;
    for (; i < full_end; i += W) step(ptrs, i, std::true_type{});
    if (i < end) padded_step<V, G, S, H, kTwoStates, kHalf>(a, i, end - i, step);
    V::fence();
  } else {
    const std::size_t full_end = i + (end - i) / W * W;
    for (; i < full_end; i += W) step(ptrs, i, std::false_type{});
    if (i < end) padded_step<V, G, S, H, kTwoStates, kHalf>(a, i, end - i, step);
  }
}

template <class V, DType G, DType S, DType H, bool kHalf, bool kL2>
void adam_range(const KernelArgs& a, std::size_t begin, std::size_t end) {
  using R = typename V::R;
  const R gscale = V::set1(a.grad_scale), wd = V::set1(a.weight_decay);
  const R b1 = V::set1(a.beta1), c1 = V::set1(a.one_minus_beta1);
  const R b2 = V::set1(a.beta2), c2 = V::set1(a.one_minus_beta2);
  const R inv_sqrt_bc2 = V::set1(a.inv_sqrt_bc2), eps = V::set1(a.eps);
  const R decay = V::set1(a.decay), neg_step = V::set1(a.neg_step);
  for_each_vector<V, G, S, H, true, kHalf>(
      a, begin, end, [&](const Ptrs& p, std::size_t i, auto stream) {
        R g = V::mul(load_at<V, G>(p.grad, i), gscale);
        R w = V::load_f32(p.master + i);
        if constexpr (kL2) g = V::fmadd(wd, w, g);
        const R m = V::fmadd(b1, load_at<V, S>(p.s1, i), V::mul(c1, g));
        const R v = V::fmadd(b2, load_at<V, S>(p.s2, i), V::mul(V::mul(c2, g), g));
        const R d = V::fmadd(V::sqrt(v), inv_sqrt_bc2, eps);
        w = V::mul(w, decay);
        w = V::fmadd(neg_step, V::div(m, d), w);
        V::store_f32(p.master + i, w);
        store_at<V, S>(p.s1, i, m);
        store_at<V, S>(p.s2, i, v);
        if constexpr (kHalf) store_half<V, H, decltype(stream)::value>(p.half, i, w);
      });
}

template <class V, DType G, DType S, DType H, bool kHalf, bool kL2>
void adagrad_range(const KernelArgs& a, std::size_t begin, std::size_t end) {
  using R = typename V::R;
  const R gscale = V::set1(a.grad_scale), wd = V::set1(a.weight_decay);
  const R eps = V::set1(a.eps), neg_step = V::set1(a.neg_step);
  for_each_vector<V, G, S, H, false, kHalf>(
      a, begin, end, [&](const Ptrs& p, std::size_t i, auto stream) {
        R g = V::mul(load_at<V, G>(p.grad, i), gscale);
        R w = V::load_f32(p.master + i);
        if constexpr (kL2) g = V::fmadd(wd, w, g);
        const R s = V::fmadd(g, g, load_at<V, S>(p.s1, i));
        const R d = V::add(V::sqrt(s), eps);
        w = V::fmadd(neg_step, V::div(g, d), w);
        V::store_f32(p.master + i, w);
        store_at<V, S>(p.s1, i, s);
        if constexpr (kHalf) store_half<V, H, decltype(stream)::value>(p.half, i, w);
      });
}

template <class V, DType G, DType S, DType H, bool kHalf, bool kL2>
void lion_range(const KernelArgs& a, std::size_t begin, std::size_t end) {
  static_assert(!kL2, "Lion's weight decay is decoupled");
  using R = typename V::R;
  const R gscale = V::set1(a.grad_scale);
  const R b1 = V::set1(a.beta1), c1 = V::set1(a.one_minus_beta1);
  const R b2 = V::set1(a.beta2), c2 = V::set1(a.one_minus_beta2);
  const R decay = V::set1(a.decay), neg_step = V::set1(a.neg_step);
  for_each_vector<V, G, S, H, false, kHalf>(
      a, begin, end, [&](const Ptrs& p, std::size_t i, auto stream) {
        const R g = V::mul(load_at<V, G>(p.grad, i), gscale);
        const R m_old = load_at<V, S>(p.s1, i);
        const R c = V::fmadd(b1, m_old, V::mul(c1, g));
        R w = V::mul(V::load_f32(p.master + i), decay);
        w = V::fmadd(neg_step, V::sign(c), w);
        const R m = V::fmadd(b2, m_old, V::mul(c2, g));
        V::store_f32(p.master + i, w);
        store_at<V, S>(p.s1, i, m);
        if constexpr (kHalf) store_half<V, H, decltype(stream)::value>(p.half, i, w);
      });
}

// Picks the instantiation for the run-time dtypes. State dtypes are fp32 or bf16 and half
// copies bf16 or fp16 (validated by the caller), so only those are instantiated.
#define ZORO_OPTIM_DEFINE_ENTRY(name, range_fn, allow_l2)                         \
  template <class V>                                                              \
  void name(const KernelArgs& a, std::size_t begin, std::size_t end) {            \
    with_dtype(a.grad_dtype, [&](auto g) {                                        \
      constexpr DType G = decltype(g)::value;                                     \
      with_bool(a.state_dtype == DType::kBF16, [&](auto bs) {                     \
        constexpr DType S = decltype(bs)::value ? DType::kBF16 : DType::kF32;     \
        with_bool(a.half_out != nullptr, [&](auto half) {                         \
          constexpr bool kHalf = decltype(half)::value;                           \
          with_bool(kHalf&& a.half_dtype == DType::kF16, [&](auto fh) {           \
            constexpr DType H = decltype(fh)::value ? DType::kF16 : DType::kBF16; \
            with_bool(allow_l2&& a.l2, [&](auto l2) {                             \
              constexpr bool kL2 = decltype(l2)::value;                           \
              if constexpr ((allow_l2 || !kL2) && (kHalf || H == DType::kBF16)) { \
                range_fn<V, G, S, H, kHalf, kL2>(a, begin, end);                  \
              }                                                                   \
            });                                                                   \
          });                                                                     \
        });                                                                       \
      });                                                                         \
    });                                                                           \
  }

ZORO_OPTIM_DEFINE_ENTRY(adam_entry, adam_range, true)
ZORO_OPTIM_DEFINE_ENTRY(adagrad_entry, adagrad_range, true)
ZORO_OPTIM_DEFINE_ENTRY(lion_entry, lion_range, false)

#undef ZORO_OPTIM_DEFINE_ENTRY

template <class V>
constexpr KernelTable make_table() {
  return KernelTable{&adam_entry<V>, &adagrad_entry<V>, &lion_entry<V>};
}

}  // namespace
}  // namespace zoro::optim::detail

// The roofline kernel over a vector type V: the optimizer's loads and stores, an add each.
#pragma once

#include "bench/cpu_adam/roofline.h"
#include "offload/optim/kernels_impl.h"

namespace zoro::bench {
namespace {

using optim::detail::KernelArgs;
using optim::detail::Ptrs;

template <class V, DType G, DType S, DType H, bool kHalf>
void roofline_range(const KernelArgs& a, std::size_t begin, std::size_t end) {
  optim::detail::for_each_vector<V, G, S, H, true, kHalf>(
      a, begin, end, [&](const Ptrs& p, std::size_t i, auto stream) {
        using optim::detail::load_at;
        using optim::detail::store_at;
        const auto g = load_at<V, G>(p.grad, i);
        const auto w = V::add(V::load_f32(p.master + i), g);
        V::store_f32(p.master + i, w);
        store_at<V, S>(p.s1, i, V::add(load_at<V, S>(p.s1, i), g));
        store_at<V, S>(p.s2, i, V::fmadd(g, g, load_at<V, S>(p.s2, i)));  // stays >= 0
        if constexpr (kHalf) optim::detail::store_half<V, H, decltype(stream)::value>(p.half, i, w);
      });
}

template <class V>
void roofline_entry(const KernelArgs& a, std::size_t begin, std::size_t end) {
  using optim::detail::with_bool;
  using optim::detail::with_dtype;
  with_dtype(a.grad_dtype, [&](auto g) {
    constexpr DType G = decltype(g)::value;
    with_bool(a.state_dtype == DType::kBF16, [&](auto bs) {
      constexpr DType S = decltype(bs)::value ? DType::kBF16 : DType::kF32;
      with_bool(a.half_out != nullptr, [&](auto half) {
        constexpr bool kHalf = decltype(half)::value;
        with_bool(kHalf && a.half_dtype == DType::kF16, [&](auto fh) {
          constexpr DType H = decltype(fh)::value ? DType::kF16 : DType::kBF16;
          if constexpr (kHalf || H == DType::kBF16)
            roofline_range<V, G, S, H, kHalf>(a, begin, end);
        });
      });
    });
  });
}

}  // namespace
}  // namespace zoro::bench

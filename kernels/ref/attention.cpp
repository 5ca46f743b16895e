// Reference causal self-attention, forward and backward. Contract in kernels.h.
//
// Note [Attention saves lse]: forward keeps only the log-sum-exp of each score row (B*NH*T
// values), not the (T,T) probabilities: backward recomputes p(t,s) = exp(score - lse). The
// CUDA twin does the same, so activation memory stays linear in T.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ref/kernels.h"
#include "kernels/ref/parallel.h"
#include "runtime/base/check.h"

namespace zoro::kernels::ref {

using detail::grain_for;
using detail::parallel_chunks;

namespace {

void check_shape(int B, int T, int C, int NH) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && NH > 0 && C % NH == 0,
             "attention: B=" << B << " T=" << T << " C=" << C << " NH=" << NH
                             << " (C must be a positive multiple of NH)");
}

// Pointers into qkv/out for one (b, t, h).
template <class R>
struct Rows {
  std::size_t C3, C, hs, T;
  const R* q(const R* qkv, std::size_t b, std::size_t t, std::size_t h) const {
    return qkv + (b * T + t) * C3 + h * hs;
  }
  const R* k(const R* qkv, std::size_t b, std::size_t t, std::size_t h) const {
    return q(qkv, b, t, h) + C;
  }
  const R* v(const R* qkv, std::size_t b, std::size_t t, std::size_t h) const {
    return q(qkv, b, t, h) + 2 * C;
  }
};

template <class R>
R dot(const R* a, const R* b, std::size_t n) {
  R s = 0;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

template <class R>
void attention_forward(R* out, R* lse, const R* qkv, int B, int T, int C, int NH) {
  check_shape(B, T, C, NH);
  const std::size_t hs = static_cast<std::size_t>(C / NH);
  const Rows<R> rows{3 * static_cast<std::size_t>(C), static_cast<std::size_t>(C), hs,
                     static_cast<std::size_t>(T)};
  const R scale = R(1) / std::sqrt(static_cast<R>(hs));
  const std::size_t items = static_cast<std::size_t>(B) * NH * T;  // (b, h, t)
  parallel_chunks(items, grain_for(static_cast<std::size_t>(T) * hs),
                  [&](std::size_t i0, std::size_t i1) {
                    std::vector<R> score(static_cast<std::size_t>(T));
                    for (std::size_t i = i0; i < i1; ++i) {
                      const std::size_t t = i % T;
                      const std::size_t h = (i / T) % NH;
                      const std::size_t b = i / (static_cast<std::size_t>(T) * NH);
                      const R* q = rows.q(qkv, b, t, h);
                      R m = -std::numeric_limits<R>::infinity();
                      for (std::size_t s = 0; s <= t; ++s) {
                        score[s] = dot(q, rows.k(qkv, b, s, h), hs) * scale;
                        m = std::max(m, score[s]);
                      }
                      R sum = 0;
                      for (std::size_t s = 0; s <= t; ++s) sum += std::exp(score[s] - m);
                      const R l = m + std::log(sum);
                      lse[i] = l;
                      R* o = out + (b * T + t) * C + h * hs;
                      std::fill(o, o + hs, R(0));
                      for (std::size_t s = 0; s <= t; ++s) {
                        const R p = std::exp(score[s] - l);
                        const R* v = rows.v(qkv, b, s, h);
                        for (std::size_t d = 0; d < hs; ++d) o[d] += p * v[d];
                      }
                    }
                  });
}

template <class R>
void attention_backward(R* dqkv, const R* dout, const R* qkv, const R* out, const R* lse, int B,
                        int T, int C, int NH) {
  check_shape(B, T, C, NH);
  const std::size_t hs = static_cast<std::size_t>(C / NH);
  const std::size_t Tz = static_cast<std::size_t>(T);
  const Rows<R> rows{3 * static_cast<std::size_t>(C), static_cast<std::size_t>(C), hs, Tz};
  const R scale = R(1) / std::sqrt(static_cast<R>(hs));
  const std::size_t items = static_cast<std::size_t>(B) * NH * T;  // (b, h, t), as lse
  const std::size_t grain = grain_for(Tz * hs);
  auto unpack = [&](std::size_t i, std::size_t& b, std::size_t& h, std::size_t& t) {
    t = i % Tz;
    h = (i / Tz) % NH;
    b = i / (Tz * NH);
  };
  auto dout_row = [&](std::size_t b, std::size_t t, std::size_t h) {
    return dout + (b * Tz + t) * C + h * hs;
  };
  // D_t = dout_t . out_t = sum_s p(t,s) dp(t,s): the row term of the softmax backward.
  std::vector<R> D(items);
  parallel_chunks(items, grain_for(hs), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      std::size_t b, h, t;
      unpack(i, b, h, t);
      D[i] = dot(dout_row(b, t, h), out + (b * Tz + t) * C + h * hs, hs);
    }
  });
  // ds(t,s) = p(t,s) (dout_t . v_s - D_t). Two passes so that each writes rows it owns, with
  // no locks: queries (dq_t = scale sum_s ds k_s), then keys (dk_s = scale sum_t ds q_t,
  // dv_s = sum_t p dout_t).
  parallel_chunks(items, grain, [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      std::size_t b, h, t;
      unpack(i, b, h, t);
      const R* q = rows.q(qkv, b, t, h);
      const R* dy = dout_row(b, t, h);
      R* dq = dqkv + (b * Tz + t) * rows.C3 + h * hs;
      for (std::size_t s = 0; s <= t; ++s) {
        const R* k = rows.k(qkv, b, s, h);
        const R p = std::exp(dot(q, k, hs) * scale - lse[i]);
        const R ds = p * (dot(dy, rows.v(qkv, b, s, h), hs) - D[i]);
        for (std::size_t d = 0; d < hs; ++d) dq[d] += scale * ds * k[d];
      }
    }
  });
  parallel_chunks(items, grain, [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      std::size_t b, h, s;
      unpack(i, b, h, s);
      const R* k = rows.k(qkv, b, s, h);
      const R* v = rows.v(qkv, b, s, h);
      R* dk = dqkv + (b * Tz + s) * rows.C3 + rows.C + h * hs;
      R* dv = dk + rows.C;
      for (std::size_t t = s; t < Tz; ++t) {
        const std::size_t it = (b * NH + h) * Tz + t;
        const R* q = rows.q(qkv, b, t, h);
        const R* dy = dout_row(b, t, h);
        const R p = std::exp(dot(q, k, hs) * scale - lse[it]);
        const R ds = p * (dot(dy, v, hs) - D[it]);
        for (std::size_t d = 0; d < hs; ++d) {
          dk[d] += scale * ds * q[d];
          dv[d] += p * dy[d];
        }
      }
    }
  });
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int, int, int, int);
template void attention_backward<double>(double*, const double*, const double*, const double*,
                                         const double*, int, int, int, int);

}  // namespace zoro::kernels::ref

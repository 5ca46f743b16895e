// Reference kernels that work row by row or element by element: embedding, layernorm, GELU,
// residual, casts. Contracts in kernels.h.
#include <cmath>

#include "kernels/ref/kernels.h"
#include "kernels/ref/parallel.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"

namespace zoro::kernels::ref {

using detail::grain_for;
using detail::parallel_chunks;

// ---- embedding ---------------------------------------------------------------------------

namespace {
void check_tokens(const std::int32_t* tokens, std::size_t rows, int V) {
  for (std::size_t r = 0; r < rows; ++r) {
    ZORO_CHECK(tokens[r] >= 0 && tokens[r] < V,
               "embedding: token " << tokens[r] << " at row " << r << " outside [0, " << V << ")");
  }
}
}  // namespace

template <class R>
void embedding_forward(R* out, const std::int32_t* tokens, const R* wte, const R* wpe, int B, int T,
                       int C, int V) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && V > 0,
             "embedding: B=" << B << " T=" << T << " C=" << C << " V=" << V);
  const std::size_t rows = static_cast<std::size_t>(B) * T;
  check_tokens(tokens, rows, V);
  parallel_chunks(rows, grain_for(C), [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      const std::size_t t = r % static_cast<std::size_t>(T);
      const R* te = wte + static_cast<std::size_t>(tokens[r]) * C;
      const R* pe = wpe + t * C;
      R* o = out + r * C;
      for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
    }
  });
}

template <class R>
void embedding_backward(Nullable<R> dwte, Nullable<R> dwpe, const R* dout,
                        const std::int32_t* tokens, int B, int T, int C, int V) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && V > 0,
             "embedding: B=" << B << " T=" << T << " C=" << C << " V=" << V);
  const std::size_t rows = static_cast<std::size_t>(B) * T;
  check_tokens(tokens, rows, V);
  if (dwte != nullptr) {
    // Rows sharing a token add into the same dwte row: split the columns, not the rows.
    parallel_chunks(static_cast<std::size_t>(C), grain_for(rows),
                    [&](std::size_t c0, std::size_t c1) {
                      for (std::size_t r = 0; r < rows; ++r) {
                        R* d = dwte + static_cast<std::size_t>(tokens[r]) * C;
                        const R* g = dout + r * C;
                        for (std::size_t c = c0; c < c1; ++c) d[c] += g[c];
                      }
                    });
  }
  if (dwpe != nullptr) {
    parallel_chunks(static_cast<std::size_t>(T), grain_for(static_cast<std::size_t>(B) * C),
                    [&](std::size_t t0, std::size_t t1) {
                      for (std::size_t t = t0; t < t1; ++t) {
                        R* d = dwpe + t * C;
                        for (int b = 0; b < B; ++b) {
                          const R* g = dout + (static_cast<std::size_t>(b) * T + t) * C;
                          for (int c = 0; c < C; ++c) d[c] += g[c];
                        }
                      }
                    });
  }
}

// ---- layernorm ---------------------------------------------------------------------------

template <class R>
void layernorm_forward(R* out, R* mean, R* rstd, const R* inp, const R* weight, const R* bias,
                       int N, int C) {
  ZORO_CHECK(N > 0 && C > 0, "layernorm: N=" << N << " C=" << C);
  parallel_chunks(static_cast<std::size_t>(N), grain_for(C), [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      const R* x = inp + r * C;
      // Two passes (mean, then centred variance): no cancellation for rows with a large mean.
      R m = 0;
      for (int c = 0; c < C; ++c) m += x[c];
      m /= static_cast<R>(C);
      R v = 0;
      for (int c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
      v /= static_cast<R>(C);
      const R s = R(1) / std::sqrt(v + static_cast<R>(kLayerNormEps));
      R* o = out + r * C;
      for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
      mean[r] = m;
      rstd[r] = s;
    }
  });
}

template <class R>
void layernorm_backward(R* dinp, Nullable<R> dweight, Nullable<R> dbias, const R* dout,
                        const R* inp, const R* weight, const R* mean, const R* rstd, int N, int C) {
  ZORO_CHECK(N > 0 && C > 0, "layernorm: N=" << N << " C=" << C);
  // dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)), g = dout * weight.
  parallel_chunks(static_cast<std::size_t>(N), grain_for(C), [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      const R* x = inp + r * C;
      const R* dy = dout + r * C;
      const R m = mean[r];
      const R s = rstd[r];
      R g_mean = 0;
      R gx_mean = 0;
      for (int c = 0; c < C; ++c) {
        const R g = dy[c] * weight[c];
        g_mean += g;
        gx_mean += g * (x[c] - m) * s;
      }
      g_mean /= static_cast<R>(C);
      gx_mean /= static_cast<R>(C);
      R* dx = dinp + r * C;
      for (int c = 0; c < C; ++c) {
        const R xhat = (x[c] - m) * s;
        dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
      }
    }
  });
  if (dweight == nullptr && dbias == nullptr) return;
  parallel_chunks(static_cast<std::size_t>(C), grain_for(N), [&](std::size_t c0, std::size_t c1) {
    for (std::size_t r = 0; r < static_cast<std::size_t>(N); ++r) {
      const R* x = inp + r * C;
      const R* dy = dout + r * C;
      for (std::size_t c = c0; c < c1; ++c) {
        if (dweight != nullptr) dweight[c] += dy[c] * (x[c] - mean[r]) * rstd[r];
        if (dbias != nullptr) dbias[c] += dy[c];
      }
    }
  });
}

// ---- GELU --------------------------------------------------------------------------------

namespace {
template <class R>
constexpr R kGeluScale = static_cast<R>(0.7978845608028654);  // sqrt(2 / pi)
template <class R>
constexpr R kGeluCubic = static_cast<R>(0.044715);
}  // namespace

template <class R>
void gelu_forward(R* out, const R* inp, std::size_t n) {
  parallel_chunks(n, grain_for(16), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      const R x = inp[i];
      const R u = kGeluScale<R> * (x + kGeluCubic<R> * x * x * x);
      out[i] = R(0.5) * x * (R(1) + std::tanh(u));
    }
  });
}

template <class R>
void gelu_backward(R* dinp, const R* inp, const R* dout, std::size_t n) {
  parallel_chunks(n, grain_for(16), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      const R x = inp[i];
      const R u = kGeluScale<R> * (x + kGeluCubic<R> * x * x * x);
      const R th = std::tanh(u);
      const R du = kGeluScale<R> * (R(1) + R(3) * kGeluCubic<R> * x * x);
      const R grad = R(0.5) * (R(1) + th) + R(0.5) * x * (R(1) - th * th) * du;
      dinp[i] += grad * dout[i];
    }
  });
}

// ---- residual ----------------------------------------------------------------------------

template <class R>
void residual_forward(R* out, const R* a, const R* b, std::size_t n) {
  parallel_chunks(n, grain_for(1), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

// ---- casts -------------------------------------------------------------------------------

namespace {
template <class Out, class In, class Fn>
void cast_loop(Out* out, const In* in, std::size_t n, Fn fn) {
  parallel_chunks(n, grain_for(1), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) out[i] = fn(in[i]);
  });
}
}  // namespace

void cast_f32_to_bf16(std::uint16_t* out, const float* in, std::size_t n) {
  cast_loop(out, in, n, [](float v) { return float_to_bf16(v); });
}
void cast_bf16_to_f32(float* out, const std::uint16_t* in, std::size_t n) {
  cast_loop(out, in, n, [](std::uint16_t v) { return bf16_to_float(v); });
}
void cast_f32_to_f16(std::uint16_t* out, const float* in, std::size_t n) {
  cast_loop(out, in, n, [](float v) { return float_to_fp16(v); });
}
void cast_f16_to_f32(float* out, const std::uint16_t* in, std::size_t n) {
  cast_loop(out, in, n, [](std::uint16_t v) { return fp16_to_float(v); });
}

#define ZORO_INSTANTIATE(R)                                                                       \
  template void embedding_forward<R>(R*, const std::int32_t*, const R*, const R*, int, int, int,  \
                                     int);                                                        \
  template void embedding_backward<R>(R*, R*, const R*, const std::int32_t*, int, int, int, int); \
  template void layernorm_forward<R>(R*, R*, R*, const R*, const R*, const R*, int, int);         \
  template void layernorm_backward<R>(R*, R*, R*, const R*, const R*, const R*, const R*,         \
                                      const R*, int, int);                                        \
  template void gelu_forward<R>(R*, const R*, std::size_t);                                       \
  template void gelu_backward<R>(R*, const R*, const R*, std::size_t);                            \
  template void residual_forward<R>(R*, const R*, const R*, std::size_t);
ZORO_INSTANTIATE(float)
ZORO_INSTANTIATE(double)
#undef ZORO_INSTANTIATE

}  // namespace zoro::kernels::ref

// Reference linear layer by OpenBLAS. Contract in kernels.h.
//
// cblas works row-major directly (CblasRowMajor), so the three GEMMs are written as the
// math reads: out = inp . W^T, dinp += dout . W, dW += dout^T . inp.
#include <cblas.h>

#include <algorithm>

#include "kernels/ref/kernels.h"
#include "kernels/ref/parallel.h"
#include "runtime/base/check.h"

namespace zoro::kernels::ref {

using detail::grain_for;
using detail::parallel_chunks;

namespace {

// Note [OpenBLAS under ThreadSanitizer]: OpenBLAS's thread pool hands work over with spin
// waits TSan cannot see, so under TSan its workers' writes of C look like races with our
// reads. There the GEMMs run on the calling thread only (set once, before the first call);
// other builds keep OpenBLAS's threads.
void single_thread_under_tsan() {
  if constexpr (detail::kTsanBuild) {
    static const bool once = [] {
      openblas_set_num_threads(1);
      return true;
    }();
    (void)once;
  }
}

// One name for sgemm/dgemm, row-major.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  single_thread_under_tsan();
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
  single_thread_under_tsan();
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

void check_shape(int N, int IC, int OC) {
  ZORO_CHECK(N > 0 && IC > 0 && OC > 0, "matmul: N=" << N << " IC=" << IC << " OC=" << OC);
}

}  // namespace

template <class R>
void matmul_forward(R* out, const R* inp, const R* weight, Nullable<const R> bias, int N, int IC,
                    int OC) {
  check_shape(N, IC, OC);
  R beta = 0;
  if (bias != nullptr) {
    // Start every row at the bias and let the GEMM add into it (beta = 1): one pass over out.
    parallel_chunks(static_cast<std::size_t>(N), grain_for(OC),
                    [&](std::size_t r0, std::size_t r1) {
                      for (std::size_t r = r0; r < r1; ++r)
                        std::copy(bias, bias + OC, out + r * OC);
                    });
    beta = 1;
  }
  gemm(CblasNoTrans, CblasTrans, N, OC, IC, inp, IC, weight, IC, beta, out, OC);
}

template <class R>
void matmul_backward(Nullable<R> dinp, Nullable<R> dweight, Nullable<R> dbias, const R* dout,
                     const R* inp, const R* weight, int N, int IC, int OC) {
  check_shape(N, IC, OC);
  if (dinp != nullptr)
    gemm(CblasNoTrans, CblasNoTrans, N, IC, OC, dout, OC, weight, IC, 1, dinp, IC);
  if (dweight != nullptr) {
    gemm(CblasTrans, CblasNoTrans, OC, IC, N, dout, OC, inp, IC, 1, dweight, IC);
  }
  if (dbias != nullptr) {
    parallel_chunks(static_cast<std::size_t>(OC), grain_for(N),
                    [&](std::size_t c0, std::size_t c1) {
                      for (std::size_t r = 0; r < static_cast<std::size_t>(N); ++r) {
                        const R* g = dout + r * OC;
                        for (std::size_t c = c0; c < c1; ++c) dbias[c] += g[c];
                      }
                    });
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int,
                                    int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int);

}  // namespace zoro::kernels::ref

// CUDA twin of the reference linear layer (kernels/ref/gemm.cpp), on cuBLAS.
//
// cuBLAS is column-major; the bytes of a row-major (R, C) matrix are the column-major (C, R)
// matrix, its transpose. So each product is handed to cuBLAS for the transposes:
//   out  (N,OC)  = inp . W^T     as  out^T  = op_T(W bytes)   . inp bytes    m=OC n=N  k=IC
//   dinp (N,IC) += dout . W      as  dinp^T = W bytes         . dout bytes   m=IC n=N  k=OC
//   dW  (OC,IC) += dout^T . inp  as  dW^T   = inp bytes       . op_T(dout)   m=IC n=OC k=N
// Compute is fp32 (CUBLAS_COMPUTE_32F: bf16 inputs, fp32 accumulation; fp32 inputs stay
// fp32, no TF32); dW is written in fp32 (Note [CUDA gradient types] in kernels.h).
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::kernels::cuda {

using namespace detail;

CublasContext::CublasContext(cudaStream_t stream) : stream_(stream) {
  ZORO_CUBLAS_CHECK(cublasCreate(&handle_));
  const cublasStatus_t status = cublasSetStream(handle_, stream_);
  if (status != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle_);
    ZORO_CUBLAS_CHECK(status);
  }
}

CublasContext::~CublasContext() {
  if (handle_ == nullptr) return;
  const cublasStatus_t status = cublasDestroy(handle_);
  if (status != CUBLAS_STATUS_SUCCESS) {
    ZORO_LOG(kError) << "cublasDestroy failed: " << cublasGetStatusString(status);
  }
}

namespace {

constexpr unsigned kBlock = 256;

template <class Elem>
constexpr cudaDataType_t data_type() {
  return std::is_same_v<Elem, float> ? CUDA_R_32F : CUDA_R_16BF;
}

// Every row of out (N,OC) starts as bias, so the GEMM adds into it with beta = 1.
template <class Elem>
__global__ void broadcast_bias_kernel(Elem* out, const Elem* bias, std::size_t n, int OC) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[i % OC];
  }
}

void check_shape(int N, int IC, int OC) {
  ZORO_CHECK(N > 0 && IC > 0 && OC > 0, "matmul: N=" << N << " IC=" << IC << " OC=" << OC);
}

}  // namespace

template <class Elem>
void matmul_forward(CublasContext& ctx, Elem* out, const Elem* inp, const Elem* weight,
                    const Elem* bias, int N, int IC, int OC) {
  check_shape(N, IC, OC);
  const float alpha = 1.f;
  float beta = 0.f;
  if (bias != nullptr) {
    const std::size_t n = static_cast<std::size_t>(N) * OC;
    broadcast_bias_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream()>>>(out, bias, n, OC);
    ZORO_CUDA_CHECK_LAUNCH();
    beta = 1.f;
  }
  constexpr cudaDataType_t t = data_type<Elem>();
  ZORO_CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &alpha, weight,
                                 t, IC, inp, t, IC, &beta, out, t, OC, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

template <class Elem>
void matmul_backward(CublasContext& ctx, Elem* dinp, float* dweight, float* dbias, const Elem* dout,
                     const Elem* inp, const Elem* weight, int N, int IC, int OC) {
  check_shape(N, IC, OC);
  const float one = 1.f;
  constexpr cudaDataType_t t = data_type<Elem>();
  if (dinp != nullptr) {
    ZORO_CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, weight,
                                   t, IC, dout, t, OC, &one, dinp, t, IC, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  }
  if (dweight != nullptr) {
    ZORO_CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, t,
                                   IC, dout, t, OC, &one, dweight, CUDA_R_32F, IC,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (dbias != nullptr) {
    launch_column_sums<false, Elem>(nullptr, dbias, dout, nullptr, nullptr, nullptr, N, OC,
                                    ctx.stream());
  }
}

template void matmul_forward<float>(CublasContext&, float*, const float*, const float*,
                                    const float*, int, int, int);
template void matmul_forward<bf16>(CublasContext&, bf16*, const bf16*, const bf16*, const bf16*,
                                   int, int, int);
template void matmul_backward<float>(CublasContext&, float*, float*, float*, const float*,
                                     const float*, const float*, int, int, int);
template void matmul_backward<bf16>(CublasContext&, bf16*, float*, float*, const bf16*, const bf16*,
                                    const bf16*, int, int, int);

}  // namespace zoro::kernels::cuda

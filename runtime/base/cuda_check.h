// CUDA and cuBLAS members of the ZORO_CHECK family (runtime/base/check.h). Include only from
// code compiled with the CUDA toolkit: runtime/device/cuda/ and kernels/cuda/.
//
//   ZORO_CUDA_CHECK(cudaMemcpyAsync(...));   throws BackendError("CUDA", code, name: string)
//   ZORO_CUDA_CHECK_NOTHROW(cudaFree(p));    logs instead: destructors, host callbacks
//   ZORO_CUDA_CHECK_LAUNCH();                after every kernel launch (cudaGetLastError)
//   ZORO_CUBLAS_CHECK(cublasGemmEx(...));
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <string>

#include "runtime/base/check.h"

#define ZORO_CUDA_CHECK(stmt)                                                                     \
  do {                                                                                            \
    const cudaError_t zoro_status_ = (stmt);                                                      \
    if (zoro_status_ != cudaSuccess) [[unlikely]] {                                               \
      ::zoro::detail::throw_backend_error(                                                        \
          __FILE__, __LINE__, #stmt, "CUDA", static_cast<long>(zoro_status_),                     \
          std::string(cudaGetErrorName(zoro_status_)) + ": " + cudaGetErrorString(zoro_status_)); \
    }                                                                                             \
  } while (0)

#define ZORO_CUDA_CHECK_NOTHROW(stmt)                                                 \
  do {                                                                                \
    const cudaError_t zoro_status_ = (stmt);                                          \
    if (zoro_status_ != cudaSuccess) [[unlikely]] {                                   \
      ZORO_LOG(kError) << #stmt " failed: " << cudaGetErrorName(zoro_status_) << ": " \
                       << cudaGetErrorString(zoro_status_);                           \
    }                                                                                 \
  } while (0)

#define ZORO_CUDA_CHECK_LAUNCH() ZORO_CUDA_CHECK(cudaGetLastError())

#define ZORO_CUBLAS_CHECK(stmt)                                                 \
  do {                                                                          \
    const cublasStatus_t zoro_status_ = (stmt);                                 \
    if (zoro_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]] {                   \
      ::zoro::detail::throw_backend_error(__FILE__, __LINE__, #stmt, "cuBLAS",  \
                                          static_cast<long>(zoro_status_),      \
                                          cublasGetStatusString(zoro_status_)); \
    }                                                                           \
  } while (0)

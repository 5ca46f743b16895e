// NCCL member of the ZORO_CHECK family. Include only from comm/nccl/.
#pragma once

#include <nccl.h>

#include "runtime/base/check.h"

#define ZORO_NCCL_CHECK(stmt)                                                \
  do {                                                                       \
    const ncclResult_t zoro_status_ = (stmt);                                \
    if (zoro_status_ != ncclSuccess) [[unlikely]] {                          \
      ::zoro::detail::throw_backend_error(__FILE__, __LINE__, #stmt, "NCCL", \
                                          static_cast<long>(zoro_status_),   \
                                          ncclGetErrorString(zoro_status_)); \
    }                                                                        \
  } while (0)

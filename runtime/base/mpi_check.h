// MPI member of the ZORO_CHECK family. Include only from comm/mpi/ and the MPI test main.
#pragma once

#include <mpi.h>

#include <string>

#include "runtime/base/check.h"

#define ZORO_MPI_CHECK(stmt)                                                              \
  do {                                                                                    \
    const int zoro_status_ = (stmt);                                                      \
    if (zoro_status_ != MPI_SUCCESS) [[unlikely]] {                                       \
      char zoro_text_[MPI_MAX_ERROR_STRING];                                              \
      int zoro_len_ = 0;                                                                  \
      MPI_Error_string(zoro_status_, zoro_text_, &zoro_len_);                             \
      ::zoro::detail::throw_backend_error(__FILE__, __LINE__, #stmt, "MPI", zoro_status_, \
                                          std::string(zoro_text_, zoro_len_));            \
    }                                                                                     \
  } while (0)

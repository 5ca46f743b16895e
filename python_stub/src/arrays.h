// Host arrays from Python without copies: NumPy arrays (and any object with the buffer
// protocol) and CPU torch.Tensors (through their data pointers; torch is never linked).
//
// Contract of host_array():
// - The element type comes from the object: NumPy float32 -> fp32, float16 -> fp16, uint16 ->
//   bf16 bit patterns (NumPy has no bfloat16; no ml_dtypes needed); torch float32 / float16 /
//   bfloat16 -> the same. Any other type raises TypeError naming the argument and the type,
//   and so does a type outside `allowed`.
// - The memory must be C-contiguous (any shape; it is used flat), and writable when
//   `writable`; otherwise zoro::InvalidArgument (a ValueError in Python) naming the argument.
//   A tensor must be a dense CPU tensor. Lengths and alignment are the optimizers' checks
//   (also InvalidArgument, naming the buffer).
// - The returned HostArray keeps the buffer exported (or the tensor referenced) until it is
//   destroyed, so the memory stays valid while a call without the GIL uses it. Create and
//   destroy it with the GIL held.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>

#include "python_stub/src/bindings.h"
#include "runtime/base/dtype.h"

namespace zoro::python {

class HostArray {
 public:
  HostArray() = default;
  ~HostArray();
  HostArray(HostArray&& other) noexcept;
  HostArray& operator=(HostArray&&) = delete;
  HostArray(const HostArray&) = delete;
  HostArray& operator=(const HostArray&) = delete;

  void* data() const noexcept { return data_; }
  std::size_t elems() const noexcept { return elems_; }
  DType dtype() const noexcept { return dtype_; }
  std::size_t bytes() const noexcept { return elems_ * size_of(dtype_); }

 private:
  friend HostArray host_array(py::handle, const char*, bool, std::initializer_list<DType>);
  std::unique_ptr<Py_buffer> view_;  // set for buffer-protocol objects
  py::object keep_;                  // set for tensors
  void* data_ = nullptr;
  std::size_t elems_ = 0;
  DType dtype_ = DType::kF32;
};

HostArray host_array(py::handle obj, const char* name, bool writable,
                     std::initializer_list<DType> allowed);

// "float32, float16 or uint16 (bf16)" style list of `allowed`, for messages and docs.
std::string describe_dtypes(std::initializer_list<DType> allowed);

}  // namespace zoro::python

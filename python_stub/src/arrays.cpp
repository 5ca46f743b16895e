// See arrays.h for the contract.
#include "python_stub/src/arrays.h"

#include <cstdint>
#include <string_view>

#include "runtime/base/error.h"

namespace zoro::python {
namespace {

// Refusals of an argument: zoro.InvalidArgument (a ValueError) with a message for Python
// users, naming the argument (no C++ file:line: the problem is in the caller's code).
void check_arg(bool ok, const std::string& message) {
  if (!ok) throw InvalidArgument(message);
}

const char* python_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16 (NumPy uint16 bits, or torch.bfloat16)";
  }
  return "?";
}

bool is_allowed(DType t, std::initializer_list<DType> allowed) {
  for (DType a : allowed) {
    if (a == t) return true;
  }
  return false;
}

[[noreturn]] void throw_bad_dtype(const char* name, const std::string& got,
                                  std::initializer_list<DType> allowed) {
  throw py::type_error(std::string(name) + " has dtype " + got + "; expected " +
                       describe_dtypes(allowed));
}

// The struct-module format of a buffer, as a DType; false when it is none of ours. Native or
// little-endian byte order only (x86 and ARM are little-endian; '>' and '!' are refused).
bool dtype_of_format(std::string_view format, std::size_t itemsize, DType* out) {
  if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<')) {
    format.remove_prefix(1);
  }
  if (format == "f" && itemsize == 4) {
    *out = DType::kF32;
  } else if (format == "e" && itemsize == 2) {
    *out = DType::kF16;
  } else if (format == "H" && itemsize == 2) {
    *out = DType::kBF16;
  } else {
    return false;
  }
  return true;
}

bool is_torch_tensor(py::handle obj) {
  // Only a module that is already imported can have made `obj`: never import torch here.
  py::object torch = py::module_::import("sys").attr("modules").attr("get")("torch");
  return !torch.is_none() && py::isinstance(obj, torch.attr("Tensor"));
}

}  // namespace

std::string describe_dtypes(std::initializer_list<DType> allowed) {
  std::string out;
  std::size_t i = 0;
  for (DType t : allowed) {
    if (i > 0) out += i + 1 == allowed.size() ? " or " : ", ";
    out += python_name(t);
    ++i;
  }
  return out;
}

HostArray::~HostArray() {
  if (view_) PyBuffer_Release(view_.get());
}

HostArray::HostArray(HostArray&& other) noexcept
    : view_(std::move(other.view_)),
      keep_(std::move(other.keep_)),
      data_(other.data_),
      elems_(other.elems_),
      dtype_(other.dtype_) {}

HostArray host_array(py::handle obj, const char* name, bool writable,
                     std::initializer_list<DType> allowed) {
  HostArray out;
  if (PyObject_CheckBuffer(obj.ptr())) {
    auto view = std::make_unique<Py_buffer>();
    // Strides and format, read-only accepted: every refusal below gets our own message.
    if (PyObject_GetBuffer(obj.ptr(), view.get(), PyBUF_RECORDS_RO) != 0) {
      throw py::error_already_set();
    }
    out.view_ = std::move(view);  // released by ~HostArray from here on
    const Py_buffer& v = *out.view_;
    const std::string format = v.format != nullptr ? v.format : "B";
    if (!dtype_of_format(format, static_cast<std::size_t>(v.itemsize), &out.dtype_)) {
      throw_bad_dtype(name, "with buffer format '" + format + "'", allowed);
    }
    if (!is_allowed(out.dtype_, allowed)) throw_bad_dtype(name, python_name(out.dtype_), allowed);
    check_arg(PyBuffer_IsContiguous(&v, 'C') == 1,
              std::string(name) +
                  " is not C-contiguous (a strided view or transpose): pass a contiguous array "
                  "(numpy.ascontiguousarray would copy, and the update would not reach the "
                  "original)");
    check_arg(!writable || !v.readonly,
              std::string(name) + " is read-only, but it is written in place");
    out.data_ = v.buf;
    out.elems_ = static_cast<std::size_t>(v.len) / static_cast<std::size_t>(v.itemsize);
    return out;
  }
  if (is_torch_tensor(obj)) {
    const std::string dtype = py::str(obj.attr("dtype"));
    if (dtype == "torch.float32") {
      out.dtype_ = DType::kF32;
    } else if (dtype == "torch.float16") {
      out.dtype_ = DType::kF16;
    } else if (dtype == "torch.bfloat16") {
      out.dtype_ = DType::kBF16;
    } else {
      throw_bad_dtype(name, dtype, allowed);
    }
    if (!is_allowed(out.dtype_, allowed)) throw_bad_dtype(name, dtype, allowed);
    const std::string device = py::str(obj.attr("device"));
    check_arg(device == "cpu", std::string(name) + " is a tensor on " + device +
                                   "; host arrays must be CPU tensors (zoro.torch stages CUDA "
                                   "tensors through pinned memory)");
    const std::string layout = py::str(obj.attr("layout"));
    check_arg(layout == "torch.strided",
              std::string(name) + " has layout " + layout + "; a dense tensor is needed");
    check_arg(obj.attr("is_contiguous")().cast<bool>(),
              std::string(name) +
                  " is not contiguous: pass a contiguous tensor (.contiguous() would copy, and "
                  "the update would not reach the original)");
    out.keep_ = py::reinterpret_borrow<py::object>(obj);
    out.data_ = reinterpret_cast<void*>(obj.attr("data_ptr")().cast<std::uintptr_t>());
    out.elems_ = obj.attr("numel")().cast<std::size_t>();
    return out;
  }
  throw py::type_error(std::string(name) +
                       " must be a NumPy array (or another buffer) or a CPU torch.Tensor, not " +
                       std::string(py::str(obj.get_type().attr("__name__"))));
}

}  // namespace zoro::python

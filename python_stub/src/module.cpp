// zoro._zoro: the extension module behind the `zoro` Python package (python_stub/zoro).
// Its typed interface is python_stub/zoro/_zoro.pyi; tests/test_stubs.py keeps the two equal.
#include <pybind11/pybind11.h>

#include "python_stub/src/bindings.h"

PYBIND11_MODULE(_zoro, m) {
  m.doc() = "zoro: ZeRO-Offload-style training runtime (C++ core bindings)";
  zoro::python::bind_errors(m);
  zoro::python::bind_device(m);
  zoro::python::bind_optim(m);
  zoro::python::bind_runtime(m);
}

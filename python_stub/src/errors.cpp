// zoro's C++ exceptions as Python exceptions. Each class is a subclass of zoro.Error (itself a
// RuntimeError) and, where Python has a matching built-in, of that too, so that callers can
// catch either way:
//   zoro.Error            RuntimeError        zoro::Error (and anything else zoro throws)
//   zoro.InvalidArgument  Error, ValueError   zoro::InvalidArgument
//   zoro.OutOfMemory      Error, MemoryError  zoro::OutOfMemory
//   zoro.IoError          Error, OSError      zoro::IoError
//   zoro.BackendError     Error               zoro::BackendError (.library, .code)
//   zoro.Unsupported      Error, NotImplementedError   zoro::Unsupported
// The message is what() of the C++ exception, unchanged (file:line, the check, the detail).
#include <string>

#include "python_stub/src/bindings.h"
#include "runtime/base/error.h"

namespace zoro::python {
namespace {

// The classes live as long as the interpreter: one strong reference each, never released.
struct Classes {
  PyObject* error = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* out_of_memory = nullptr;
  PyObject* io_error = nullptr;
  PyObject* backend_error = nullptr;
  PyObject* unsupported = nullptr;
};
Classes g_classes;

PyObject* new_class(py::module_& m, const char* name, const py::tuple& bases, const char* doc) {
  // "zoro.<name>": users meet these through the zoro package, which re-exports them.
  const std::string qualified = std::string("zoro.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (cls == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(cls));
  return cls;
}

void raise_backend_error(const BackendError& e) {
  py::object cls = py::reinterpret_borrow<py::object>(g_classes.backend_error);
  py::object exc = cls(e.what());
  exc.attr("library") = e.library();
  exc.attr("code") = e.code();
  PyErr_SetObject(g_classes.backend_error, exc.ptr());
}

}  // namespace

void bind_errors(py::module_& m) {
  auto& c = g_classes;
  c.error = new_class(m, "Error", py::make_tuple(py::handle(PyExc_RuntimeError)),
                      "Base class of every error zoro raises.");
  py::handle base(c.error);
  c.invalid_argument =
      new_class(m, "InvalidArgument", py::make_tuple(base, py::handle(PyExc_ValueError)),
                "Bad input: a value, a config key, an array, a file's contents.");
  c.out_of_memory =
      new_class(m, "OutOfMemory", py::make_tuple(base, py::handle(PyExc_MemoryError)),
                "A capacity or budget would be exceeded; the message names the bytes.");
  c.io_error = new_class(m, "IoError", py::make_tuple(base, py::handle(PyExc_OSError)),
                         "A file could not be read or written, or is not what it claims.");
  c.backend_error = new_class(m, "BackendError", py::make_tuple(base),
                              "A call into CUDA, cuBLAS, NCCL, MPI or hwloc failed; .library "
                              "and .code name the library and its status code.");
  c.unsupported =
      new_class(m, "Unsupported", py::make_tuple(base, py::handle(PyExc_NotImplementedError)),
                "Not supported by this backend or build (e.g. CUDA in a CPU-only build).");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const BackendError& e) {
      raise_backend_error(e);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(g_classes.invalid_argument, e.what());
    } catch (const OutOfMemory& e) {
      PyErr_SetString(g_classes.out_of_memory, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(g_classes.io_error, e.what());
    } catch (const Unsupported& e) {
      PyErr_SetString(g_classes.unsupported, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_classes.error, e.what());
    }
  });

  // For the tests of this mapping: throws the named C++ exception with `message`.
  m.def(
      "_raise_for_test",
      [](const std::string& kind, const std::string& message) {
        if (kind == "Error") throw Error(message);
        if (kind == "InvalidArgument") throw InvalidArgument(message);
        if (kind == "OutOfMemory") throw OutOfMemory(message);
        if (kind == "IoError") throw IoError(message);
        if (kind == "BackendError") throw BackendError(message, "CUDA", 2);
        if (kind == "Unsupported") throw Unsupported(message);
        throw py::value_error("unknown error kind '" + kind + "'");
      },
      py::arg("kind"), py::arg("message"));
}

}  // namespace zoro::python

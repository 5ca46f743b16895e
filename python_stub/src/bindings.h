// The pieces of the zoro._zoro extension module, one function per area, called in order by
// module.cpp. Contract: every binding that calls into zoro lets zoro::Error propagate; the
// translator registered by bind_errors() turns it into the matching Python exception (same
// message). Long-running calls (the CPU optimizers, engine steps, checkpoints) release the GIL.
#pragma once

#include <pybind11/pybind11.h>

namespace zoro::python {

namespace py = pybind11;

// zoro.Error and its subclasses, and the C++ -> Python translator (errors.cpp).
void bind_errors(py::module_& m);
// Device, Buffer, PinnedPool, open_device, memory kinds (device.cpp).
void bind_device(py::module_& m);
// CpuExecutor, the optimizer configs and adam_step / adagrad_step / lion_step (optim.cpp).
void bind_optim(py::module_& m);
// Config, MemoryPlan, Engine, StepReport, StepTiming (runtime.cpp).
void bind_runtime(py::module_& m);

}  // namespace zoro::python

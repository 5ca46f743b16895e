// The CPU optimizers (offload/optim/cpu_optimizer.h) on NumPy arrays and CPU torch.Tensors,
// in place and without copies: arrays.h turns each argument into a pointer, the update runs
// without the GIL, and on_chunk_done (a Python callable) runs with the GIL after each chunk.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

#include "offload/optim/cpu_executor.h"
#include "offload/optim/cpu_optimizer.h"
#include "offload/optim/isa.h"
#include "python_stub/src/arrays.h"
#include "python_stub/src/bindings.h"

namespace zoro::python {
namespace {

using optim::ConstTensor;
using optim::CpuExecutor;
using optim::Range;
using optim::Tensor;

constexpr std::initializer_list<DType> kF32Only = {DType::kF32};
constexpr std::initializer_list<DType> kStateTypes = {DType::kF32, DType::kBF16};
constexpr std::initializer_list<DType> kGradTypes = {DType::kF32, DType::kF16, DType::kBF16};
constexpr std::initializer_list<DType> kHalfTypes = {DType::kBF16, DType::kF16};

// The executor used when a call names none: one per process, every core of the process's
// NUMA node. Deliberately never destroyed: its oneTBB arena must not be torn down during
// interpreter shutdown, when the order of static destructors is unknown.
CpuExecutor& default_executor() {
  static CpuExecutor* executor = new CpuExecutor(CpuExecutor::Options{});
  return *executor;
}

Tensor tensor_of(const HostArray& a) { return Tensor{a.data(), a.elems(), a.dtype()}; }
ConstTensor const_tensor_of(const HostArray& a) {
  return ConstTensor{a.data(), a.elems(), a.dtype()};
}

// The arguments every *_step shares, resolved with the GIL held.
struct Common {
  Common(HostArray m, HostArray g) : master(std::move(m)), grad(std::move(g)) {}
  HostArray master;
  HostArray grad;
  std::optional<HostArray> half_out;
  Range range;
  optim::StepInfo info;
  std::size_t chunk_elems = 0;
  optim::ChunkDone on_chunk_done;
  CpuExecutor* executor = nullptr;

  std::span<float> master_span() const {
    return {static_cast<float*>(master.data()), master.elems()};
  }
  Tensor half_tensor() const { return half_out ? tensor_of(*half_out) : Tensor{nullptr, 0, {}}; }
};

Common common(py::handle master, py::handle grad, std::int64_t step, float grad_scale,
              py::handle half_out, std::size_t begin, std::optional<std::size_t> end,
              std::size_t chunk_elems, const py::object& on_chunk_done, CpuExecutor* executor) {
  Common c(host_array(master, "master", true, kF32Only),
           host_array(grad, "grad", false, kGradTypes));
  if (!half_out.is_none()) c.half_out.emplace(host_array(half_out, "half_out", true, kHalfTypes));
  c.range = Range{begin, end.value_or(c.master.elems())};
  c.info = optim::StepInfo{step, grad_scale};
  c.chunk_elems = chunk_elems;
  if (!on_chunk_done.is_none()) {
    // A borrowed handle: copying the std::function without the GIL must not touch a
    // reference count, and the caller's argument keeps the callable alive for the call.
    py::handle fn = on_chunk_done;
    // Called on this (the calling) thread, which released the GIL for the update.
    c.on_chunk_done = [fn](Range chunk) {
      py::gil_scoped_acquire gil;
      fn(chunk.begin, chunk.end);
    };
  }
  c.executor = executor != nullptr ? executor : &default_executor();
  return c;
}

// kwargs shared by the three step functions, in their Python order.
#define ZORO_PY_STEP_KWARGS                                                                \
  py::kw_only(), py::arg("step"),                                                          \
      py::arg("grad_scale") = 1.f, py::arg("half_out") = py::none(), py::arg("begin") = 0, \
      py::arg("end") = py::none(), py::arg("chunk_elems") = 0,                             \
      py::arg("on_chunk_done") = py::none(), py::arg("executor") = nullptr

template <class T>
std::string fields_repr(const char* type, const T& fields) {
  std::ostringstream s;
  s << type << "(";
  bool first = true;
  for (const auto& [k, v] : fields) {
    s << (first ? "" : ", ") << k << "=" << v;
    first = false;
  }
  s << ")";
  return s.str();
}

}  // namespace

void bind_optim(py::module_& m) {
  // ---- instruction set ----
  m.def(
      "cpu_isa", [] { return std::string(optim::isa_name(optim::current_isa())); },
      "The instruction set the CPU optimizers run with now.");
  m.def(
      "supported_cpu_isas",
      [] {
        std::vector<std::string> out;
        for (optim::Isa isa : optim::supported_isas()) out.emplace_back(optim::isa_name(isa));
        return out;
      },
      "Every instruction set this CPU can run, scalar first.");
  m.def(
      "set_cpu_isa",
      [](std::optional<std::string> name) {
        if (name) {
          optim::set_isa(optim::parse_isa(*name));
        } else {
          optim::reset_isa();
        }
      },
      py::arg("name"), "Forces an instruction set for the process; None goes back to the default.");

  // ---- executor ----
  py::class_<CpuExecutor>(m, "CpuExecutor")
      .def(py::init([](int threads, int numa_node, bool pin_threads) {
             CpuExecutor::Options o;
             o.threads = threads;
             o.numa_node = numa_node;
             o.pin_threads = pin_threads;
             return std::make_unique<CpuExecutor>(o);
           }),
           py::kw_only(), py::arg("threads") = 0, py::arg("numa_node") = -1,
           py::arg("pin_threads") = true)
      .def_property_readonly("threads", &CpuExecutor::threads)
      .def_property_readonly("cpus", &CpuExecutor::cpus)
      .def_property_readonly("numa_node", &CpuExecutor::numa_node);

  // ---- configs ----
  py::class_<optim::AdamConfig>(m, "AdamConfig")
      .def(py::init([](float lr, float beta1, float beta2, float eps, float weight_decay,
                       bool decoupled) {
             return optim::AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled};
           }),
           py::kw_only(), py::arg("lr") = 1e-3f, py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f,
           py::arg("eps") = 1e-8f, py::arg("weight_decay") = 0.f,
           py::arg("decoupled_weight_decay") = false)
      .def_readwrite("lr", &optim::AdamConfig::lr)
      .def_readwrite("beta1", &optim::AdamConfig::beta1)
      .def_readwrite("beta2", &optim::AdamConfig::beta2)
      .def_readwrite("eps", &optim::AdamConfig::eps)
      .def_readwrite("weight_decay", &optim::AdamConfig::weight_decay)
      .def_readwrite("decoupled_weight_decay", &optim::AdamConfig::decoupled_weight_decay)
      .def("__repr__", [](const optim::AdamConfig& c) {
        return fields_repr("AdamConfig",
                           std::vector<std::pair<std::string, double>>{
                               {"lr", c.lr},
                               {"beta1", c.beta1},
                               {"beta2", c.beta2},
                               {"eps", c.eps},
                               {"weight_decay", c.weight_decay},
                               {"decoupled_weight_decay", c.decoupled_weight_decay ? 1 : 0}});
      });

  py::class_<optim::AdagradConfig>(m, "AdagradConfig")
      .def(py::init([](float lr, float eps, float weight_decay) {
             return optim::AdagradConfig{lr, eps, weight_decay};
           }),
           py::kw_only(), py::arg("lr") = 1e-2f, py::arg("eps") = 1e-10f,
           py::arg("weight_decay") = 0.f)
      .def_readwrite("lr", &optim::AdagradConfig::lr)
      .def_readwrite("eps", &optim::AdagradConfig::eps)
      .def_readwrite("weight_decay", &optim::AdagradConfig::weight_decay)
      .def("__repr__", [](const optim::AdagradConfig& c) {
        return fields_repr("AdagradConfig",
                           std::vector<std::pair<std::string, double>>{
                               {"lr", c.lr}, {"eps", c.eps}, {"weight_decay", c.weight_decay}});
      });

  py::class_<optim::LionConfig>(m, "LionConfig")
      .def(py::init([](float lr, float beta1, float beta2, float weight_decay) {
             return optim::LionConfig{lr, beta1, beta2, weight_decay};
           }),
           py::kw_only(), py::arg("lr") = 1e-4f, py::arg("beta1") = 0.9f, py::arg("beta2") = 0.99f,
           py::arg("weight_decay") = 0.f)
      .def_readwrite("lr", &optim::LionConfig::lr)
      .def_readwrite("beta1", &optim::LionConfig::beta1)
      .def_readwrite("beta2", &optim::LionConfig::beta2)
      .def_readwrite("weight_decay", &optim::LionConfig::weight_decay)
      .def("__repr__", [](const optim::LionConfig& c) {
        return fields_repr("LionConfig", std::vector<std::pair<std::string, double>>{
                                             {"lr", c.lr},
                                             {"beta1", c.beta1},
                                             {"beta2", c.beta2},
                                             {"weight_decay", c.weight_decay}});
      });

  // ---- the steps ----
  m.def(
      "adam_step",
      [](const optim::AdamConfig& config, py::handle master, py::handle exp_avg,
         py::handle exp_avg_sq, py::handle grad, std::int64_t step, float grad_scale,
         py::handle half_out, std::size_t begin, std::optional<std::size_t> end,
         std::size_t chunk_elems, const py::object& on_chunk_done, CpuExecutor* executor) {
        Common c = common(master, grad, step, grad_scale, half_out, begin, end, chunk_elems,
                          on_chunk_done, executor);
        HostArray m1 = host_array(exp_avg, "exp_avg", true, kStateTypes);
        HostArray m2 = host_array(exp_avg_sq, "exp_avg_sq", true, kStateTypes);
        const optim::AdamBuffers buffers{c.master_span(), tensor_of(m1), tensor_of(m2),
                                         const_tensor_of(c.grad), c.half_tensor()};
        py::gil_scoped_release nogil;
        optim::adam_step(*c.executor, config, c.info, buffers, c.range, c.chunk_elems,
                         c.on_chunk_done);
      },
      py::arg("config"), py::arg("master"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
      py::arg("grad"), ZORO_PY_STEP_KWARGS);

  m.def(
      "adagrad_step",
      [](const optim::AdagradConfig& config, py::handle master, py::handle state_sum,
         py::handle grad, std::int64_t step, float grad_scale, py::handle half_out,
         std::size_t begin, std::optional<std::size_t> end, std::size_t chunk_elems,
         const py::object& on_chunk_done, CpuExecutor* executor) {
        Common c = common(master, grad, step, grad_scale, half_out, begin, end, chunk_elems,
                          on_chunk_done, executor);
        HostArray sum = host_array(state_sum, "state_sum", true, kStateTypes);
        const optim::AdagradBuffers buffers{c.master_span(), tensor_of(sum),
                                            const_tensor_of(c.grad), c.half_tensor()};
        py::gil_scoped_release nogil;
        optim::adagrad_step(*c.executor, config, c.info, buffers, c.range, c.chunk_elems,
                            c.on_chunk_done);
      },
      py::arg("config"), py::arg("master"), py::arg("state_sum"), py::arg("grad"),
      ZORO_PY_STEP_KWARGS);

  m.def(
      "lion_step",
      [](const optim::LionConfig& config, py::handle master, py::handle exp_avg, py::handle grad,
         std::int64_t step, float grad_scale, py::handle half_out, std::size_t begin,
         std::optional<std::size_t> end, std::size_t chunk_elems, const py::object& on_chunk_done,
         CpuExecutor* executor) {
        Common c = common(master, grad, step, grad_scale, half_out, begin, end, chunk_elems,
                          on_chunk_done, executor);
        HostArray m1 = host_array(exp_avg, "exp_avg", true, kStateTypes);
        const optim::LionBuffers buffers{c.master_span(), tensor_of(m1), const_tensor_of(c.grad),
                                         c.half_tensor()};
        py::gil_scoped_release nogil;
        optim::lion_step(*c.executor, config, c.info, buffers, c.range, c.chunk_elems,
                         c.on_chunk_done);
      },
      py::arg("config"), py::arg("master"), py::arg("exp_avg"), py::arg("grad"),
      ZORO_PY_STEP_KWARGS);
}

}  // namespace zoro::python

// runtime/'s public API from Python: Config, the memory plan, the Engine (steps, step
// reports, checkpoints). Enumerations that the TOML file spells as text (dtypes, the
// optimizer) are text here too, parsed as the file's values are (InvalidArgument naming the
// key).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "offload/memory_plan.h"
#include "python_stub/src/arrays.h"
#include "python_stub/src/bindings.h"
#include "runtime/base/check.h"
#include "runtime/engine.h"

namespace zoro::python {
namespace {

using offload::MemoryPlan;
using offload::Place;
using offload::PlanOptions;

OptimizerKind parse_optimizer(const std::string& name) {
  for (OptimizerKind k : {OptimizerKind::kAdam, OptimizerKind::kAdamW, OptimizerKind::kAdagrad,
                          OptimizerKind::kLion}) {
    if (name == to_string(k)) return k;
  }
  ZORO_THROW(InvalidArgument,
             "optimizer.name = '" << name << "' is not one of adam, adamw, adagrad, lion");
}

// A read-write property of a DType field, as its TOML spelling.
template <DType Config::*Field>
void dtype_property(py::class_<Config>& c, const char* name, const char* key) {
  c.def_property(
      name, [](const Config& self) { return std::string(to_string(self.*Field)); },
      [key](Config& self, const std::string& text) { self.*Field = parse_dtype(text, key); });
}

// Sets each keyword argument as the attribute of that name; unknown names are refused like
// unknown TOML keys.
template <class T>
T from_kwargs(const py::kwargs& kwargs, const char* type) {
  py::object self = py::cast(T{});
  for (const auto& [key, value] : kwargs) {
    const std::string k = py::str(key);
    if (k.starts_with("_") || !py::hasattr(self, key)) {
      ZORO_THROW(InvalidArgument, type << ": unknown field '" << k << "'");
    }
    py::setattr(self, key, value);
  }
  return self.cast<T>();
}

py::array_t<float> to_numpy(const std::vector<float>& v) {
  return py::array_t<float>(static_cast<py::ssize_t>(v.size()), v.data());
}

offload::ParamId param_id(const Engine& engine, std::uint32_t value) {
  ZORO_CHECK(value < engine.layout().size(), "ParamId(" << value << ") is not a parameter of this "
                                                        << "engine (" << engine.layout().size()
                                                        << " registered)");
  return offload::ParamId{value};
}

void bind_config(py::module_& m) {
  py::class_<LossScaleConfig>(m, "LossScaleConfig")
      .def(py::init(
          [](const py::kwargs& kw) { return from_kwargs<LossScaleConfig>(kw, "LossScaleConfig"); }))
      .def_readwrite("init", &LossScaleConfig::init)
      .def_readwrite("growth_interval", &LossScaleConfig::growth_interval)
      .def_readwrite("growth_factor", &LossScaleConfig::growth_factor)
      .def_readwrite("backoff_factor", &LossScaleConfig::backoff_factor)
      .def_readwrite("min", &LossScaleConfig::min);

  py::class_<Config> c(m, "Config");
  c.def(py::init([](const py::kwargs& kw) { return from_kwargs<Config>(kw, "Config"); }))
      .def_static("from_toml", &Config::from_toml, py::arg("text"), py::arg("origin") = "<string>")
      .def_static("from_file", &Config::from_file, py::arg("path"))
      .def_readwrite("device", &Config::device);
  dtype_property<&Config::dtype>(c, "dtype", "precision.dtype");
  dtype_property<&Config::grad_dtype>(c, "grad_dtype", "precision.grad_dtype");
  dtype_property<&Config::moments>(c, "moments", "precision.moments");
  c.def_property(
       "optimizer", [](const Config& self) { return std::string(to_string(self.optimizer)); },
       [](Config& self, const std::string& name) { self.optimizer = parse_optimizer(name); })
      .def_readwrite("lr", &Config::lr)
      .def_readwrite("beta1", &Config::beta1)
      .def_readwrite("beta2", &Config::beta2)
      .def_readwrite("eps", &Config::eps)
      .def_readwrite("weight_decay", &Config::weight_decay)
      .def_readwrite("clip_norm", &Config::clip_norm)
      .def_readwrite("loss_scale", &Config::loss_scale)
      .def_readwrite("bucket_bytes", &Config::bucket_bytes)
      .def_readwrite("bucket_count", &Config::bucket_count)
      .def_readwrite("grad_accum_steps", &Config::grad_accum_steps)
      .def_readwrite("dpu", &Config::dpu)
      .def_readwrite("dpu_warmup_steps", &Config::dpu_warmup_steps)
      .def_readwrite("host_budget_bytes", &Config::host_budget_bytes)
      .def_readwrite("cpu_threads", &Config::cpu_threads)
      .def_readwrite("chunk_elems", &Config::chunk_elems)
      .def_readwrite("trace", &Config::trace)
      .def("validate", &Config::validate)
      .def("uses_loss_scaling", &Config::uses_loss_scaling)
      .def("effective_host_budget", &Config::effective_host_budget)
      .def("to_toml", &Config::to_toml)
      .def("fingerprint", &Config::fingerprint)
      .def("__eq__", [](const Config& a, const Config& b) { return a.to_toml() == b.to_toml(); })
      .def("__repr__",
           [](const Config& self) { return "Config.from_toml('''\n" + self.to_toml() + "''')"; });
}

void bind_plan(py::module_& m) {
  py::enum_<Place>(m, "Place")
      .value("DEVICE", Place::kDevice)
      .value("PINNED_HOST", Place::kPinnedHost);

  py::class_<PlanOptions>(m, "PlanOptions")
      .def(py::init(
          [](const py::kwargs& kw) { return from_kwargs<PlanOptions>(kw, "PlanOptions"); }))
      .def_readwrite("total_elems", &PlanOptions::total_elems)
      .def_property(
          "working", [](const PlanOptions& o) { return std::string(to_string(o.working)); },
          [](PlanOptions& o, const std::string& t) { o.working = parse_dtype(t, "working"); })
      .def_property(
          "grad_wire", [](const PlanOptions& o) { return std::string(to_string(o.grad_wire)); },
          [](PlanOptions& o, const std::string& t) { o.grad_wire = parse_dtype(t, "grad_wire"); })
      .def_property(
          "moments", [](const PlanOptions& o) { return std::string(to_string(o.moments)); },
          [](PlanOptions& o, const std::string& t) { o.moments = parse_dtype(t, "moments"); })
      .def_readwrite("optimizer_states", &PlanOptions::optimizer_states)
      .def_readwrite("bucket_bytes", &PlanOptions::bucket_bytes)
      .def_readwrite("bucket_count", &PlanOptions::bucket_count)
      .def_readwrite("dpu", &PlanOptions::dpu)
      .def_readwrite("staging_chunk_elems", &PlanOptions::staging_chunk_elems)
      .def_readwrite("staging_chunks", &PlanOptions::staging_chunks)
      .def_readwrite("device_reserve_bytes", &PlanOptions::device_reserve_bytes);

  py::class_<offload::PlanLine>(m, "PlanLine")
      .def_readonly("category", &offload::PlanLine::category)
      .def_readonly("place", &offload::PlanLine::place)
      .def_readonly("bytes", &offload::PlanLine::bytes)
      .def("__repr__", [](const offload::PlanLine& l) {
        std::ostringstream s;
        s << "PlanLine('" << l.category << "', "
          << (l.place == Place::kDevice ? "Place.DEVICE" : "Place.PINNED_HOST") << ", " << l.bytes
          << ")";
        return s.str();
      });

  py::class_<MemoryPlan>(m, "MemoryPlan")
      .def(py::init<const PlanOptions&>(), py::arg("options"))
      .def_property_readonly("lines", &MemoryPlan::lines)
      .def("total", &MemoryPlan::total, py::arg("place"))
      .def("bytes_of", &MemoryPlan::bytes_of, py::arg("category"))
      .def("check_fits", &MemoryPlan::check_fits, py::arg("device_capacity"),
           py::arg("host_budget"))
      .def("to_string", &MemoryPlan::to_string)
      .def("__str__", &MemoryPlan::to_string);
}

void bind_engine(py::module_& m) {
  py::class_<offload::ParamId>(m, "ParamId")
      .def(py::init([](std::uint32_t v) { return offload::ParamId{v}; }), py::arg("value"))
      .def_readonly("value", &offload::ParamId::value)
      .def("__int__", [](offload::ParamId p) { return p.value; })
      .def("__index__", [](offload::ParamId p) { return p.value; })
      .def("__eq__", [](offload::ParamId a, offload::ParamId b) { return a == b; })
      .def("__hash__", [](offload::ParamId p) { return p.value; })
      .def("__repr__",
           [](offload::ParamId p) { return "ParamId(" + std::to_string(p.value) + ")"; });

  py::class_<offload::ParamSlot>(m, "ParamSlot")
      .def_property_readonly("id", [](const offload::ParamSlot& s) { return s.id; })
      .def_readonly("name", &offload::ParamSlot::name)
      .def_readonly("shape", &offload::ParamSlot::shape)
      .def_readonly("numel", &offload::ParamSlot::numel)
      .def_readonly("offset", &offload::ParamSlot::offset);

  py::class_<StepTiming>(m, "StepTiming")
      .def_readonly("step", &StepTiming::step)
      .def_readonly("d2h_ms", &StepTiming::d2h_ms)
      .def_readonly("h2d_ms", &StepTiming::h2d_ms)
      .def_readonly("exposed_ms", &StepTiming::exposed_ms)
      .def_readonly("update_ms", &StepTiming::update_ms)
      .def_readonly("bytes_d2h", &StepTiming::bytes_d2h)
      .def_readonly("bytes_h2d", &StepTiming::bytes_h2d);

  py::class_<StepReport>(m, "StepReport")
      .def_readonly("step", &StepReport::step)
      .def_readonly("micro_step", &StepReport::micro_step)
      .def_readonly("boundary", &StepReport::boundary)
      .def_readonly("applied", &StepReport::applied)
      .def_readonly("overflow", &StepReport::overflow)
      .def_readonly("deferred", &StepReport::deferred)
      .def_readonly("grad_norm", &StepReport::grad_norm)
      .def_readonly("clip_factor", &StepReport::clip_factor)
      .def_readonly("loss_scale", &StepReport::loss_scale)
      .def_readonly("wait_folds_ms", &StepReport::wait_folds_ms)
      .def_readonly("update_ms", &StepReport::update_ms)
      .def_readonly("end_step_ms", &StepReport::end_step_ms)
      .def_readonly("bytes_d2h", &StepReport::bytes_d2h)
      .def_readonly("bytes_h2d", &StepReport::bytes_h2d)
      .def_readonly("timing", &StepReport::timing)
      .def("__repr__", [](const StepReport& r) {
        std::ostringstream s;
        s << "StepReport(step=" << r.step << ", micro_step=" << r.micro_step
          << ", applied=" << (r.applied ? "True" : "False")
          << ", overflow=" << (r.overflow ? "True" : "False") << ", grad_norm=" << r.grad_norm
          << ", loss_scale=" << r.loss_scale << ")";
        return s.str();
      });

  using G = py::call_guard<py::gil_scoped_release>;
  py::class_<Engine>(m, "Engine")
      .def(py::init<Config>(), py::arg("config"), G())
      .def(py::init<Config, device::Device&>(), py::arg("config"), py::arg("device"),
           py::keep_alive<1, 3>(), G())
      .def(
          "add_parameter",
          [](Engine& e, std::string name, std::vector<std::int64_t> shape, py::handle init) {
            HostArray values = host_array(init, "init", false, {DType::kF32});
            return e.add_parameter(
                std::move(name), std::move(shape),
                std::span<const float>(static_cast<const float*>(values.data()), values.elems()));
          },
          py::arg("name"), py::arg("shape"), py::arg("init"))
      .def("finalize", &Engine::finalize, G())
      .def_property_readonly("finalized", &Engine::finalized)
      .def_property_readonly("plan", &Engine::plan, py::return_value_policy::copy)
      .def("preview_plan", &Engine::preview_plan)
      .def_property_readonly("config", &Engine::config, py::return_value_policy::copy)
      .def_property_readonly("parameters", [](const Engine& e) { return e.layout().slots(); })
      .def(
          "find", [](const Engine& e, const std::string& name) { return e.layout().find(name).id; },
          py::arg("name"))
      .def_property_readonly("device", &Engine::device, py::return_value_policy::reference_internal)
      .def(
          "param_ptr",
          [](Engine& e, std::uint32_t p) {
            return reinterpret_cast<std::uintptr_t>(e.param_data(param_id(e, p)));
          },
          py::arg("param"))
      .def("begin_step", &Engine::begin_step, G())
      .def(
          "grad_slot",
          [](Engine& e, std::uint32_t p) {
            return reinterpret_cast<std::uintptr_t>(e.grad_slot(param_id(e, p)));
          },
          py::arg("param"))
      .def(
          "set_grad",
          [](Engine& e, std::uint32_t id, py::handle grad) {
            const offload::ParamId p = param_id(e, id);
            const DType wire = e.config().grad_dtype;
            HostArray g = host_array(grad, "grad", false, {wire});
            const auto& slot = e.layout().slot(p);
            ZORO_CHECK(g.elems() == slot.numel, "grad for '" << slot.name << "' has " << g.elems()
                                                             << " elements; the parameter has "
                                                             << slot.numel);
            py::gil_scoped_release nogil;
            void* dst = e.grad_slot(p);
            // The slot is free once the compute stream reaches this point (Note [Gradient
            // path]); a blocking copy is ordered after no stream, so wait for it first.
            e.compute_stream().synchronize();
            e.device().copy(dst, g.data(), g.bytes());
          },
          py::arg("param"), py::arg("grad"))
      .def(
          "grads_ready",
          [](Engine& e, const std::vector<std::uint32_t>& ids) {
            std::vector<offload::ParamId> params;
            for (std::uint32_t id : ids) params.push_back(param_id(e, id));
            py::gil_scoped_release nogil;
            e.grads_ready(std::span<const offload::ParamId>(params));
          },
          py::arg("params"))
      .def("end_step", &Engine::end_step, G())
      .def_property_readonly("loss_scale", &Engine::loss_scale)
      .def("set_lr", &Engine::set_lr, py::arg("lr"))
      .def_property_readonly("lr", &Engine::lr)
      .def_property_readonly("step", &Engine::step)
      .def("flush", &Engine::flush, G())
      .def(
          "master", [](Engine& e, std::uint32_t p) { return to_numpy(e.master(param_id(e, p))); },
          py::arg("param"))
      .def(
          "working", [](Engine& e, std::uint32_t p) { return to_numpy(e.working(param_id(e, p))); },
          py::arg("param"))
      .def(
          "moment",
          [](Engine& e, std::uint32_t p, int which) {
            return to_numpy(e.moment(param_id(e, p), which));
          },
          py::arg("param"), py::arg("which"))
      .def("save_checkpoint", &Engine::save_checkpoint, py::arg("dir"), G())
      .def("load_checkpoint", &Engine::load_checkpoint, py::arg("dir"), G())
      .def("write_trace", &Engine::write_trace, py::arg("path"), G());
}

}  // namespace

void bind_runtime(py::module_& m) {
  bind_config(m);
  bind_plan(m);
  bind_engine(m);
}

}  // namespace zoro::python

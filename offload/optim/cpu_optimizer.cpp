#include "offload/optim/cpu_optimizer.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "offload/optim/kernels.h"
#include "runtime/base/check.h"

namespace zoro::optim {

namespace {

struct Region {
  const char* name;
  std::uintptr_t begin;
  std::uintptr_t end;
};

// Checks one buffer against master's length, null-ness, alignment and the allowed dtypes, and
// records its byte range for the overlap check.
void check_buffer(const char* name, const void* data, std::size_t elems, DType dtype, std::size_t n,
                  std::initializer_list<DType> allowed, std::vector<Region>& regions) {
  bool ok = false;
  for (DType d : allowed) ok = ok || d == dtype;
  ZORO_CHECK(ok, name << " has dtype " << to_string(dtype) << ", which is not allowed here");
  ZORO_CHECK(elems == n, name << " has " << elems << " elements but master has " << n);
  ZORO_CHECK(n == 0 || data != nullptr, name << " is null (with " << n << " elements)");
  const auto addr = reinterpret_cast<std::uintptr_t>(data);
  ZORO_CHECK(addr % size_of(dtype) == 0, name << " at " << data << " is not aligned to its "
                                              << size_of(dtype) << "-byte elements");
  if (n > 0) regions.push_back({name, addr, addr + n * size_of(dtype)});
}

void check_no_overlap(const std::vector<Region>& regions) {
  for (std::size_t i = 0; i < regions.size(); ++i) {
    for (std::size_t j = i + 1; j < regions.size(); ++j) {
      const Region& a = regions[i];
      const Region& b = regions[j];
      ZORO_CHECK(a.end <= b.begin || b.end <= a.begin, a.name << " and " << b.name << " overlap");
    }
  }
}

void check_common(const StepInfo& info, Range range, std::size_t n) {
  ZORO_CHECK(info.step >= 1, "step=" << info.step << " must be >= 1 (the first update is 1)");
  ZORO_CHECK(std::isfinite(info.grad_scale) && info.grad_scale > 0.f,
             "grad_scale=" << info.grad_scale << " must be finite and > 0");
  ZORO_CHECK(range.begin <= range.end && range.end <= n,
             "range [" << range.begin << ", " << range.end << ") is not inside [0, " << n << ")");
}

void check_nonnegative(const char* name, float value) {
  ZORO_CHECK(std::isfinite(value) && value >= 0.f,
             name << "=" << value << " must be finite and >= 0");
}

void check_beta(const char* name, float value, bool allow_one) {
  ZORO_CHECK(value >= 0.f && (allow_one ? value <= 1.f : value < 1.f),
             name << "=" << value << " must be in [0, 1" << (allow_one ? "]" : ")"));
}

void check_half(const Tensor& half_out, std::size_t n, std::vector<Region>& regions) {
  if (half_out.data == nullptr && half_out.elems == 0) return;  // no half copy
  check_buffer("half_out", half_out.data, half_out.elems, half_out.dtype, n,
               {DType::kBF16, DType::kF16}, regions);
}

void fill_common(detail::KernelArgs& a, std::span<float> master, const ConstTensor& grad,
                 const Tensor& half_out, const StepInfo& info) {
  a.master = master.data();
  a.grad = grad.data;
  a.grad_dtype = grad.dtype;
  a.half_out = half_out.data;
  a.half_dtype = half_out.data != nullptr ? half_out.dtype : DType::kBF16;
  a.grad_scale = info.grad_scale;
}

void run(CpuExecutor& executor, detail::KernelFn kernel, const detail::KernelArgs& args,
         Range range, std::size_t chunk_elems, const ChunkDone& on_chunk_done) {
  executor.run_chunked(
      range, chunk_elems, [&](Range r) { kernel(args, r.begin, r.end); }, on_chunk_done);
}

}  // namespace

void adam_step(CpuExecutor& executor, const AdamConfig& config, const StepInfo& info,
               const AdamBuffers& buffers, Range range, std::size_t chunk_elems,
               const ChunkDone& on_chunk_done) {
  const std::size_t n = buffers.master.size();
  check_nonnegative("lr", config.lr);
  check_beta("beta1", config.beta1, false);
  check_beta("beta2", config.beta2, false);
  check_nonnegative("eps", config.eps);
  check_nonnegative("weight_decay", config.weight_decay);
  check_common(info, range, n);
  std::vector<Region> regions;
  check_buffer("master", buffers.master.data(), n, DType::kF32, n, {DType::kF32}, regions);
  check_buffer("exp_avg", buffers.exp_avg.data, buffers.exp_avg.elems, buffers.exp_avg.dtype, n,
               {DType::kF32, DType::kBF16}, regions);
  check_buffer("exp_avg_sq", buffers.exp_avg_sq.data, buffers.exp_avg_sq.elems,
               buffers.exp_avg_sq.dtype, n, {DType::kF32, DType::kBF16}, regions);
  ZORO_CHECK(buffers.exp_avg.dtype == buffers.exp_avg_sq.dtype,
             "exp_avg is " << to_string(buffers.exp_avg.dtype) << " but exp_avg_sq is "
                           << to_string(buffers.exp_avg_sq.dtype) << " (they must match)");
  check_buffer("grad", buffers.grad.data, buffers.grad.elems, buffers.grad.dtype, n,
               {DType::kF32, DType::kF16, DType::kBF16}, regions);
  check_half(buffers.half_out, n, regions);
  check_no_overlap(regions);

  detail::KernelArgs a;
  fill_common(a, buffers.master, buffers.grad, buffers.half_out, info);
  a.state1 = buffers.exp_avg.data;
  a.state2 = buffers.exp_avg_sq.data;
  a.state_dtype = buffers.exp_avg.dtype;
  const double lr = config.lr, beta1 = config.beta1, beta2 = config.beta2;
  const double step = static_cast<double>(info.step);
  const double bc1 = 1.0 - std::pow(beta1, step);
  const double bc2 = 1.0 - std::pow(beta2, step);
  a.beta1 = config.beta1;
  a.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  a.beta2 = config.beta2;
  a.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  a.neg_step = static_cast<float>(-lr / bc1);
  a.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  a.eps = config.eps;
  a.l2 = !config.decoupled_weight_decay && config.weight_decay > 0.f;
  a.weight_decay = config.weight_decay;
  a.decay = config.decoupled_weight_decay
                ? static_cast<float>(1.0 - lr * static_cast<double>(config.weight_decay))
                : 1.f;
  run(executor, detail::kernels_for(current_isa()).adam, a, range, chunk_elems, on_chunk_done);
}

void adam_step(CpuExecutor& executor, const AdamConfig& config, const StepInfo& info,
               const AdamBuffers& buffers) {
  adam_step(executor, config, info, buffers, Range{0, buffers.master.size()}, 0, {});
}

void adagrad_step(CpuExecutor& executor, const AdagradConfig& config, const StepInfo& info,
                  const AdagradBuffers& buffers, Range range, std::size_t chunk_elems,
                  const ChunkDone& on_chunk_done) {
  const std::size_t n = buffers.master.size();
  check_nonnegative("lr", config.lr);
  check_nonnegative("eps", config.eps);
  check_nonnegative("weight_decay", config.weight_decay);
  check_common(info, range, n);
  std::vector<Region> regions;
  check_buffer("master", buffers.master.data(), n, DType::kF32, n, {DType::kF32}, regions);
  check_buffer("state_sum", buffers.state_sum.data, buffers.state_sum.elems,
               buffers.state_sum.dtype, n, {DType::kF32, DType::kBF16}, regions);
  check_buffer("grad", buffers.grad.data, buffers.grad.elems, buffers.grad.dtype, n,
               {DType::kF32, DType::kF16, DType::kBF16}, regions);
  check_half(buffers.half_out, n, regions);
  check_no_overlap(regions);

  detail::KernelArgs a;
  fill_common(a, buffers.master, buffers.grad, buffers.half_out, info);
  a.state1 = buffers.state_sum.data;
  a.state_dtype = buffers.state_sum.dtype;
  a.l2 = config.weight_decay > 0.f;
  a.weight_decay = config.weight_decay;
  a.neg_step = -config.lr;
  a.eps = config.eps;
  run(executor, detail::kernels_for(current_isa()).adagrad, a, range, chunk_elems, on_chunk_done);
}

void lion_step(CpuExecutor& executor, const LionConfig& config, const StepInfo& info,
               const LionBuffers& buffers, Range range, std::size_t chunk_elems,
               const ChunkDone& on_chunk_done) {
  const std::size_t n = buffers.master.size();
  check_nonnegative("lr", config.lr);
  check_beta("beta1", config.beta1, true);
  check_beta("beta2", config.beta2, true);
  check_nonnegative("weight_decay", config.weight_decay);
  check_common(info, range, n);
  std::vector<Region> regions;
  check_buffer("master", buffers.master.data(), n, DType::kF32, n, {DType::kF32}, regions);
  check_buffer("exp_avg", buffers.exp_avg.data, buffers.exp_avg.elems, buffers.exp_avg.dtype, n,
               {DType::kF32, DType::kBF16}, regions);
  check_buffer("grad", buffers.grad.data, buffers.grad.elems, buffers.grad.dtype, n,
               {DType::kF32, DType::kF16, DType::kBF16}, regions);
  check_half(buffers.half_out, n, regions);
  check_no_overlap(regions);

  detail::KernelArgs a;
  fill_common(a, buffers.master, buffers.grad, buffers.half_out, info);
  a.state1 = buffers.exp_avg.data;
  a.state_dtype = buffers.exp_avg.dtype;
  a.beta1 = config.beta1;
  a.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(config.beta1));
  a.beta2 = config.beta2;
  a.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(config.beta2));
  a.neg_step = -config.lr;
  a.decay = static_cast<float>(1.0 - static_cast<double>(config.lr) * config.weight_decay);
  run(executor, detail::kernels_for(current_isa()).lion, a, range, chunk_elems, on_chunk_done);
}

}  // namespace zoro::optim

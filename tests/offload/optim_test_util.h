// Shared helpers of the CPU-optimizer tests: typed buffers at chosen (mis)alignments, the
// variants to sweep, and running one optimizer step on a set of buffers.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "offload/optim/cpu_optimizer.h"
#include "runtime/base/half.h"

namespace zoro::optim::testing {

// `elems` values of `dtype`, starting `offset_elems` elements past a 64-byte boundary (so a
// test can start a buffer anywhere relative to the vector width).
class Buf {
 public:
  Buf() = default;
  Buf(DType dtype, std::size_t elems, std::size_t offset_elems = 0)
      : dtype_(dtype), elems_(elems), storage_((elems + offset_elems) * size_of(dtype) + 128) {
    auto addr = reinterpret_cast<std::uintptr_t>(storage_.data());
    addr = (addr + 63) & ~std::uintptr_t{63};
    data_ = reinterpret_cast<std::uint8_t*>(addr) + offset_elems * size_of(dtype);
  }
  Buf(const Buf& other) : Buf(other.dtype_, other.elems_, other.offset_elems()) {
    std::memcpy(data_, other.data_, elems_ * size_of(dtype_));
  }
  Buf& operator=(const Buf& other) {
    if (this != &other) {
      Buf copy(other);
      std::swap(dtype_, copy.dtype_);
      std::swap(elems_, copy.elems_);
      std::swap(storage_, copy.storage_);
      std::swap(data_, copy.data_);
    }
    return *this;
  }

  DType dtype() const { return dtype_; }
  std::size_t size() const { return elems_; }
  void* data() { return data_; }
  const void* data() const { return data_; }
  float* f32() { return reinterpret_cast<float*>(data_); }
  std::uint16_t* u16() { return reinterpret_cast<std::uint16_t*>(data_); }
  const std::uint16_t* u16() const { return reinterpret_cast<const std::uint16_t*>(data_); }
  std::size_t offset_elems() const {
    const auto base =
        (reinterpret_cast<std::uintptr_t>(storage_.data()) + 63) & ~std::uintptr_t{63};
    return (reinterpret_cast<std::uintptr_t>(data_) - base) / size_of(dtype_);
  }

  float get(std::size_t i) const {
    switch (dtype_) {
      case DType::kF32: {
        float v;
        std::memcpy(&v, data_ + i * 4, 4);
        return v;
      }
      case DType::kBF16:
        return bf16_to_float(u16()[i]);
      case DType::kF16:
        return fp16_to_float(u16()[i]);
    }
    return 0.f;
  }
  // Stores v rounded to this buffer's type.
  void set(std::size_t i, float v) {
    switch (dtype_) {
      case DType::kF32:
        std::memcpy(data_ + i * 4, &v, 4);
        break;
      case DType::kBF16:
        u16()[i] = float_to_bf16(v);
        break;
      case DType::kF16:
        u16()[i] = float_to_fp16(v);
        break;
    }
  }
  bool same_bits(const Buf& other) const {
    return elems_ == other.elems_ && dtype_ == other.dtype_ &&
           std::memcmp(data_, other.data_, elems_ * size_of(dtype_)) == 0;
  }
  // The first index whose bits differ, or size().
  std::size_t first_difference(const Buf& other) const {
    const std::size_t b = size_of(dtype_);
    for (std::size_t i = 0; i < elems_; ++i) {
      if (std::memcmp(data_ + i * b, other.data_ + i * b, b) != 0) return i;
    }
    return elems_;
  }

  Tensor tensor() { return Tensor{data_, elems_, dtype_}; }
  ConstTensor const_tensor() const { return ConstTensor{data_, elems_, dtype_}; }

 private:
  DType dtype_ = DType::kF32;
  std::size_t elems_ = 0;
  std::vector<std::uint8_t> storage_;
  std::uint8_t* data_ = nullptr;
};

enum class Opt { kAdam, kAdamL2, kAdamW, kAdagrad, kLion };

inline const char* opt_name(Opt o) {
  switch (o) {
    case Opt::kAdam:
      return "adam";
    case Opt::kAdamL2:
      return "adam_l2";
    case Opt::kAdamW:
      return "adamw";
    case Opt::kAdagrad:
      return "adagrad";
    case Opt::kLion:
      return "lion";
  }
  return "?";
}

struct Variant {
  Opt opt = Opt::kAdam;
  DType grad = DType::kF32;
  DType state = DType::kF32;
  std::optional<DType> half;
  std::string name() const {
    return std::string(opt_name(opt)) + "/grad=" + to_string(grad) + "/state=" + to_string(state) +
           "/half=" + (half ? to_string(*half) : "none");
  }
};

inline std::vector<Variant> all_variants(std::initializer_list<Opt> opts) {
  std::vector<Variant> out;
  for (Opt o : opts) {
    for (DType g : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (DType s : {DType::kF32, DType::kBF16}) {
        for (std::optional<DType> h : {std::optional<DType>{}, std::optional<DType>{DType::kBF16},
                                       std::optional<DType>{DType::kF16}}) {
          out.push_back(Variant{o, g, s, h});
        }
      }
    }
  }
  return out;
}

// The optimizer's state and inputs for one variant.
struct Problem {
  Variant variant;
  Buf master, s1, s2, grad, half;

  Problem(const Variant& v, std::size_t n, std::size_t offset)
      : variant(v),
        master(DType::kF32, n, offset),
        s1(v.state, n, offset + 1),
        s2(v.state, n, offset + 2),
        grad(v.grad, n, offset + 3),
        half(v.half.value_or(DType::kBF16), v.half ? n : 0, offset + 5) {
    for (std::size_t i = 0; i < n; ++i) {
      s1.set(i, 0.f);
      s2.set(i, 0.f);
    }
  }
  std::size_t size() const { return master.size(); }
};

struct Hyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
  float grad_scale = 1.f;
};

inline AdamConfig adam_config(Opt opt, const Hyper& h) {
  AdamConfig c;
  c.lr = h.lr;
  c.beta1 = h.beta1;
  c.beta2 = h.beta2;
  c.eps = h.eps;
  c.weight_decay = opt == Opt::kAdam ? 0.f : h.weight_decay;
  c.decoupled_weight_decay = opt == Opt::kAdamW;
  return c;
}

// One step of the variant's optimizer on p over `range` (default: everything).
inline void run_step(CpuExecutor& ex, Problem& p, const Hyper& h, std::int64_t step,
                     std::optional<Range> range = {}, std::size_t chunk = 0,
                     const ChunkDone& done = {}) {
  const Range r = range.value_or(Range{0, p.size()});
  const StepInfo info{step, h.grad_scale};
  const Tensor half = p.variant.half ? p.half.tensor() : Tensor{};
  std::span<float> master(p.master.f32(), p.size());
  switch (p.variant.opt) {
    case Opt::kAdam:
    case Opt::kAdamL2:
    case Opt::kAdamW:
      adam_step(ex, adam_config(p.variant.opt, h), info,
                AdamBuffers{master, p.s1.tensor(), p.s2.tensor(), p.grad.const_tensor(), half}, r,
                chunk, done);
      break;
    case Opt::kAdagrad:
      adagrad_step(ex, AdagradConfig{h.lr, h.eps, h.weight_decay}, info,
                   AdagradBuffers{master, p.s1.tensor(), p.grad.const_tensor(), half}, r, chunk,
                   done);
      break;
    case Opt::kLion:
      lion_step(ex, LionConfig{h.lr, h.beta1, h.beta2, h.weight_decay}, info,
                LionBuffers{master, p.s1.tensor(), p.grad.const_tensor(), half}, r, chunk, done);
      break;
  }
}

// Sets the process's instruction set for the scope of a test and restores it.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) { set_isa(isa); }
  ~ScopedIsa() { reset_isa(); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;
};

inline std::vector<Isa> all_isas() {
  return {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};
}

inline std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return isa_name(info.param);
}

}  // namespace zoro::optim::testing

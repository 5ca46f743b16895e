// Shared by the model tests: a tiny model on a host device with either parameter store, and
// micro-batches of a learnable pattern in device memory.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "examples/zoro_train/model/gpt.h"
#include "examples/zoro_train/model/gpt_weights.h"
#include "examples/zoro_train/model/param_store.h"
#include "examples/zoro_train/model/trainer.h"
#include "runtime/device/device.h"

namespace zoro::train::testing {

inline GptConfig tiny_config() { return GptConfig{13, 8, 2, 2, 16}; }

inline Config store_config(DType dtype) {
  Config c;
  c.device = "host:mem=64MiB";
  c.dtype = dtype;
  c.grad_dtype = dtype == DType::kF32 ? DType::kF32 : DType::kBF16;
  c.lr = 1e-2;
  c.weight_decay = 0.01;
  c.clip_norm = 1.0;
  c.bucket_bytes = 8192;  // several buckets per micro-step (raised for wte automatically)
  c.bucket_count = 3;
  c.chunk_elems = 2048;  // several optimizer chunks
  c.cpu_threads = 2;
  return c;
}

// A device, a store (offload engine or on the device), the model and its trainer.
struct Rig {
  Rig(const GptConfig& model, const Config& config, bool offload, std::uint64_t seed,
      GptOptions options = {.max_batch = 2, .seq_len = 0, .recompute = false},
      const std::string& spec = "host:mem=64MiB")
      : device(device::open_device(spec)) {
    auto tensors = gpt_tensors(model);
    if (offload) {
      params = std::make_unique<EngineParams>(config, *device, tensors, gpt2_init(model, seed));
    } else {
      params = std::make_unique<DeviceParams>(config, *device, tensors, gpt2_init(model, seed));
    }
    gpt = std::make_unique<Gpt>(model, *params, options);
    trainer = std::make_unique<Trainer>(*gpt);
  }
  ~Rig() {
    trainer.reset();
    gpt.reset();
    params.reset();
  }
  std::unique_ptr<device::Device> device;
  std::unique_ptr<ParamStore> params;
  std::unique_ptr<Gpt> gpt;
  std::unique_ptr<Trainer> trainer;
};

// Host batches of the pattern x[i+1] = (x[i] + stride) % vocab from random starts (a model
// learns it quickly), copied into device memory of `device`.
class Batches {
 public:
  Batches(device::Device& device, int vocab, int B, int T, int count, std::uint64_t seed,
          int stride = 3)
      : B_(B), T_(T) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> start(0, vocab - 1);
    const std::size_t n = static_cast<std::size_t>(B) * T;
    host_.resize(static_cast<std::size_t>(count) * 2 * n);
    for (int k = 0; k < count; ++k) {
      std::int32_t* in = host_.data() + static_cast<std::size_t>(k) * 2 * n;
      for (int b = 0; b < B; ++b) {
        int x = start(rng);
        for (int t = 0; t <= T; ++t) {
          if (t < T) in[b * T + t] = x;
          if (t > 0) in[n + b * T + t - 1] = x;
          x = (x + stride) % vocab;
        }
      }
    }
    buffer_ = device.allocate(device::MemoryKind::kDevice, host_.size() * 4);
    device.copy(buffer_.data(), host_.data(), host_.size() * 4);
  }
  DeviceBatch operator[](int k) const {
    const std::size_t n = static_cast<std::size_t>(B_) * T_;
    const std::int32_t* base = buffer_.as<std::int32_t>() + static_cast<std::size_t>(k) * 2 * n;
    return {base, base + n, B_, T_};
  }
  const std::int32_t* host_inputs(int k) const {
    return host_.data() + static_cast<std::size_t>(k) * 2 * B_ * T_;
  }

 private:
  int B_, T_;
  std::vector<std::int32_t> host_;
  device::Buffer buffer_;
};

inline std::string scratch_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("zoro-model-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

template <class E>
void expect_refused(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "accepted; expected an error";
  } catch (const E& e) {
    for (const auto& f : fragments) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
          << "'" << f << "' not in: " << e.what();
    }
  }
}

}  // namespace zoro::train::testing

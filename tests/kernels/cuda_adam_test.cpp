// cuda::adamw_step (kernels/cuda/adam.cu) against ref::adamw_step, bit for bit, over many
// steps of fresh random gradients: Note [Device AdamW order] (kernels/ref/kernels.h). For a
// bf16 gradient the ref gets the same values widened to fp32 (exact), so that case is bit for
// bit too: no tolerance is needed anywhere (the inputs here are finite, so the NaN latitude of
// kernels/cuda/kernels.h does not arise). Guard bytes around every device buffer catch writes
// out of bounds. Without a usable GPU every test skips, with the reason.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/kernels.h"
#include "kernels/ref/kernels.h"
#include "runtime/base/cuda_check.h"
#include "runtime/base/error.h"
#include "runtime/base/half.h"
#include "runtime/device/device.h"
#include "tests/support/random.h"

namespace zoro::kernels {
namespace {

// More than one block's worth, and not a multiple of the block or of a warp.
constexpr std::size_t kElems = 100'003;
constexpr int kSteps = 60;
constexpr std::size_t kGuardBytes = 256;
constexpr unsigned char kGuardByte = 0xA5;

// A device buffer with guard bytes on both sides.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(std::size_t bytes) : bytes_(bytes) {
    ZORO_CUDA_CHECK(cudaMalloc(&base_, bytes_ + 2 * kGuardBytes));
    ZORO_CUDA_CHECK(cudaMemset(base_, kGuardByte, bytes_ + 2 * kGuardBytes));
  }
  ~GuardedBuffer() { ZORO_CUDA_CHECK_NOTHROW(cudaFree(base_)); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(base_) + kGuardBytes);
  }
  void upload(const void* src) {
    ZORO_CUDA_CHECK(cudaMemcpy(as<unsigned char>(), src, bytes_, cudaMemcpyHostToDevice));
  }
  void download(void* dst) const {
    ZORO_CUDA_CHECK(cudaMemcpy(dst, as<unsigned char>(), bytes_, cudaMemcpyDeviceToHost));
  }
  bool guards_intact() const {
    std::vector<unsigned char> host(bytes_ + 2 * kGuardBytes);
    ZORO_CUDA_CHECK(cudaMemcpy(host.data(), base_, host.size(), cudaMemcpyDeviceToHost));
    const auto ok = [](unsigned char b) { return b == kGuardByte; };
    return std::all_of(host.begin(), host.begin() + kGuardBytes, ok) &&
           std::all_of(host.end() - kGuardBytes, host.end(), ok);
  }

 private:
  void* base_ = nullptr;
  std::size_t bytes_;
};

struct AdamCase {
  const char* name;
  bool bf16_grad;
  bool with_output;
  ref::AdamWConfig config;
  float grad_scale;
};
void PrintTo(const AdamCase& c, std::ostream* os) { *os << c.name; }
std::string case_name(const ::testing::TestParamInfo<AdamCase>& info) { return info.param.name; }

std::vector<AdamCase> adam_cases() {
  ref::AdamWConfig adamw;
  adamw.lr = 1e-3f;
  adamw.weight_decay = 0.01f;
  ref::AdamWConfig l2;
  l2.lr = 2e-3f;
  l2.beta1 = 0.8f;
  l2.beta2 = 0.95f;
  l2.eps = 1e-6f;
  l2.weight_decay = 0.05f;
  l2.decoupled_weight_decay = false;
  return {{"F32GradAdamW", false, true, adamw, 1.f},
          {"F32GradAdamL2NoOutput", false, false, l2, 0.7f},
          {"Bf16GradAdamW", true, true, adamw, 0.25f},
          {"Bf16GradAdamL2", true, true, l2, 0.7f}};
}

cuda::AdamWConfig to_cuda(const ref::AdamWConfig& c) {
  cuda::AdamWConfig out;
  out.lr = c.lr;
  out.beta1 = c.beta1;
  out.beta2 = c.beta2;
  out.eps = c.eps;
  out.weight_decay = c.weight_decay;
  out.decoupled_weight_decay = c.decoupled_weight_decay;
  return out;
}

template <class T>
long first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  }
  return -1;
}

class CudaAdamTest : public ::testing::TestWithParam<AdamCase> {
 protected:
  void SetUp() override {
    if (device::cuda_device_count() == 0) GTEST_SKIP() << device::cuda_unavailable_reason();
    ZORO_CUDA_CHECK(cudaSetDevice(0));
    // Blocking: ordered after the legacy default stream, where the cudaMemcpy uploads run.
    ZORO_CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) ZORO_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream_));
  }
  cudaStream_t stream_ = nullptr;
};

TEST_P(CudaAdamTest, BitIdenticalToRef) {
  ZORO_TRACE_SEED();
  const AdamCase& c = GetParam();
  auto rng = testing::make_rng(11);
  const std::size_t n = kElems;
  std::vector<float> w_ref = testing::random_floats(rng, n), m_ref(n, 0.f), v_ref(n, 0.f);
  std::vector<std::uint16_t> out_ref(n, 0);
  GuardedBuffer w(n * 4), m(n * 4), v(n * 4), grad(n * (c.bf16_grad ? 2 : 4)), out(n * 2);
  w.upload(w_ref.data());
  m.upload(m_ref.data());
  v.upload(v_ref.data());
  out.upload(out_ref.data());
  std::uniform_int_distribution<int> binade(-24, 4);
  std::vector<std::uint16_t> g_bits(n);
  std::vector<float> w_got(n), m_got(n), v_got(n);
  std::vector<std::uint16_t> out_got(n);
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<float> g = testing::random_floats(rng, n);
    for (std::size_t i = 0; i < n; ++i) g[i] = i % 97 == 0 ? 0.f : std::ldexp(g[i], binade(rng));
    if (c.bf16_grad) {
      for (std::size_t i = 0; i < n; ++i) {
        g_bits[i] = float_to_bf16(g[i]);
        g[i] = bf16_to_float(g_bits[i]);  // what the device reads, exactly
      }
      grad.upload(g_bits.data());
    } else {
      grad.upload(g.data());
    }
    ref::adamw_step(w_ref.data(), m_ref.data(), v_ref.data(), g.data(),
                    c.with_output ? out_ref.data() : nullptr, n, c.config, step, c.grad_scale);
    cuda::bf16* dev_out = c.with_output ? out.as<cuda::bf16>() : nullptr;
    if (c.bf16_grad) {
      cuda::adamw_step(w.as<float>(), m.as<float>(), v.as<float>(), grad.as<cuda::bf16>(), dev_out,
                       n, to_cuda(c.config), step, c.grad_scale, stream_);
    } else {
      cuda::adamw_step(w.as<float>(), m.as<float>(), v.as<float>(), grad.as<float>(), dev_out, n,
                       to_cuda(c.config), step, c.grad_scale, stream_);
    }
    ZORO_CUDA_CHECK(cudaStreamSynchronize(stream_));
    w.download(w_got.data());
    m.download(m_got.data());
    v.download(v_got.data());
    out.download(out_got.data());
    for (auto [what, at] : {std::pair{"master", first_difference(w_ref, w_got)},
                            std::pair{"m", first_difference(m_ref, m_got)},
                            std::pair{"v", first_difference(v_ref, v_got)},
                            std::pair{"bf16 out", first_difference(out_ref, out_got)}}) {
      ASSERT_EQ(at, -1) << what << " differs at step " << step << ", element " << at;
    }
  }
  for (const GuardedBuffer* b : {&w, &m, &v, &grad, &out}) {
    EXPECT_TRUE(b->guards_intact()) << "adamw_step wrote outside a buffer";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAdamTest, ::testing::ValuesIn(adam_cases()), case_name);

TEST(CudaAdam, BadArgumentsThrowOnTheHost) {
  // Checked before any launch, so no GPU is needed (nothing is dereferenced).
  float* p = nullptr;
  EXPECT_THROW(cuda::adamw_step<float>(p, p, p, p, nullptr, 4, {}, 0, 1.f, nullptr),
               InvalidArgument);
  EXPECT_THROW(cuda::adamw_step<float>(p, p, p, p, nullptr, 4, {}, 1, 1.f, nullptr),
               InvalidArgument);
  cuda::AdamWConfig bad;
  bad.beta2 = 1.f;
  EXPECT_THROW(cuda::adamw_step<float>(p, p, p, p, nullptr, 4, bad, 1, 1.f, nullptr),
               InvalidArgument);
}

}  // namespace
}  // namespace zoro::kernels

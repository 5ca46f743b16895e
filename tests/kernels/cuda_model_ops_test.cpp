// kernels/cuda/model_ops.cu against plain host loops on fresh random inputs: gradient
// accumulation (bit for bit: one fp32 add per element, as offload/grad_fold's fold) with its
// Inf/NaN flag, the squared norm (double atomics: to 1e-12 relative), and argmax over logits
// rows (float and bf16, ties to the lowest index). Without a usable GPU every test skips.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/cuda/kernels.h"
#include "runtime/base/cuda_check.h"
#include "runtime/base/half.h"
#include "runtime/device/device.h"
#include "tests/support/random.h"

namespace zoro::kernels {
namespace {

// Odd sizes: not a multiple of a block or a warp.
constexpr std::size_t kElems = 100'003;

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n) : n_(n) {
    ZORO_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  ~DeviceArray() { ZORO_CUDA_CHECK_NOTHROW(cudaFree(p_)); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  void upload(const std::vector<T>& v) {
    ZORO_CUDA_CHECK(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    ZORO_CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

class CudaModelOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (device::cuda_device_count() == 0) GTEST_SKIP() << device::cuda_unavailable_reason();
  }
};

TEST_F(CudaModelOps, GradAccumulateMatchesTheHostFoldBitForBit) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(901);
  const auto g1 = testing::random_floats(rng, kElems, -3.f, 3.f);
  const auto g2 = testing::random_floats(rng, kElems, -3.f, 3.f);
  DeviceArray<float> acc(kElems), grad(kElems);
  DeviceArray<int> flag(1);
  ZORO_CUDA_CHECK(cudaMemset(flag.get(), 0, sizeof(int)));
  grad.upload(g1);
  cuda::grad_accumulate(acc.get(), grad.get(), kElems, true, flag.get(), nullptr);
  grad.upload(g2);
  cuda::grad_accumulate(acc.get(), grad.get(), kElems, false, flag.get(), nullptr);
  ZORO_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = acc.download();
  for (std::size_t i = 0; i < kElems; ++i) ASSERT_EQ(out[i], g1[i] + g2[i]) << i;
  EXPECT_EQ(flag.download()[0], 0);
  auto bad = g2;
  bad[kElems - 7] = std::numeric_limits<float>::quiet_NaN();
  grad.upload(bad);
  cuda::grad_accumulate(acc.get(), grad.get(), kElems, false, flag.get(), nullptr);
  ZORO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(flag.download()[0], 1);
}

TEST_F(CudaModelOps, SumSquaresMatchesDouble) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(902);
  for (std::size_t n : {std::size_t{1}, std::size_t{31}, kElems}) {
    const auto x = testing::random_floats(rng, n, -2.f, 2.f);
    DeviceArray<float> dx(n);
    DeviceArray<double> out(1);
    dx.upload(x);
    cuda::sum_squares(out.get(), dx.get(), n, nullptr);
    ZORO_CUDA_CHECK(cudaDeviceSynchronize());
    double expect = 0;
    for (float v : x) expect += static_cast<double>(v) * v;
    EXPECT_NEAR(out.download()[0], expect, 1e-12 * expect) << n;
  }
}

template <class Elem>
void check_argmax(std::mt19937_64& rng, int rows, int V) {
  auto values = testing::random_floats(rng, static_cast<std::size_t>(rows) * V, -4.f, 4.f);
  // A tie in row 0: the lowest index wins.
  values[3] = values[V - 2] = 10.f;
  std::vector<Elem> host(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<Elem, float>) {
      host[i] = values[i];
    } else {
      host[i] = std::bit_cast<Elem>(float_to_bf16(values[i]));
      values[i] = bf16_to_float(float_to_bf16(values[i]));
    }
  }
  DeviceArray<Elem> logits(host.size());
  DeviceArray<std::int32_t> out(static_cast<std::size_t>(rows));
  logits.upload(host);
  cuda::argmax_rows<Elem>(out.get(), logits.get(), rows, V, nullptr);
  ZORO_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = out.download();
  for (int r = 0; r < rows; ++r) {
    const float* row = values.data() + static_cast<std::size_t>(r) * V;
    ASSERT_EQ(got[static_cast<std::size_t>(r)], std::max_element(row, row + V) - row) << r;
  }
}

TEST_F(CudaModelOps, ArgmaxRowsMatchesTheHost) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(903);
  check_argmax<float>(rng, 37, 257);
  check_argmax<cuda::bf16>(rng, 37, 50257);
  check_argmax<float>(rng, 9, 5);
}

}  // namespace
}  // namespace zoro::kernels

// Every CUDA kernel (kernels/cuda) against its reference twin (kernels/ref) on fresh random
// inputs: TEST_P over dtype x shape, odd sizes included (T not a multiple of 32, C not a
// multiple of 8, V odd, head sizes from 5 to 256), with a per-dtype tolerance table and
// guard bytes around every device buffer to catch writes out of bounds. Without a usable GPU
// every test skips, with the reason.
//
// For bf16, inputs are rounded to bf16 before the reference sees them, so both sides compute
// on identical values and the tolerance covers only fp32-vs-bf16 arithmetic and output
// rounding. Gradient outputs start from random values (not zero), which checks that backward
// adds into them (Note [Gradient accumulation] in kernels/ref/kernels.h).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/kernels.h"
#include "kernels/ref/kernels.h"
#include "runtime/base/cuda_check.h"
#include "runtime/base/dtype.h"
#include "runtime/base/half.h"
#include "runtime/device/device.h"
#include "tests/support/random.h"

namespace zoro::kernels {
namespace {

using Floats = std::vector<float>;

struct Shape {
  int B, T, C, NH, V;
};

struct Case {
  DType dtype;
  Shape shape;
};

std::string case_label(const Case& c) {
  const Shape& s = c.shape;
  return std::string(to_string(c.dtype)) + "_B" + std::to_string(s.B) + "_T" + std::to_string(s.T) +
         "_C" + std::to_string(s.C) + "_NH" + std::to_string(s.NH) + "_V" + std::to_string(s.V);
}
std::string case_name(const ::testing::TestParamInfo<Case>& info) { return case_label(info.param); }
// How gtest shows a Case (instead of its bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << case_label(c); }

// |got - want| <= atol + rtol * |want|. bf16 keeps 8 significant bits (relative step 2^-8):
// a few of those steps cover outputs rounded to bf16 and intermediates read back from bf16.
struct Tolerance {
  double atol, rtol;
};
Tolerance tolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return {2e-4, 2e-4};
    case DType::kBF16:
      return {3e-2, 3e-2};
    case DType::kF16:
      break;
  }
  return {0, 0};
}

constexpr std::size_t kGuardBytes = 256;
constexpr unsigned char kGuardByte = 0xA5;

// A device array of float or bf16 with guard bytes on both sides.
class DeviceArray {
 public:
  DeviceArray(std::size_t elems, std::size_t elem_bytes) : elems_(elems), elem_bytes_(elem_bytes) {
    ZORO_CUDA_CHECK(cudaMalloc(&base_, bytes() + 2 * kGuardBytes));
    ZORO_CUDA_CHECK(cudaMemset(base_, kGuardByte, bytes() + 2 * kGuardBytes));
  }
  ~DeviceArray() { ZORO_CUDA_CHECK_NOTHROW(cudaFree(base_)); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  void* data() const { return static_cast<unsigned char*>(base_) + kGuardBytes; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data());
  }
  std::size_t bytes() const { return elems_ * elem_bytes_; }
  void upload(const void* src) {
    ZORO_CUDA_CHECK(cudaMemcpy(data(), src, bytes(), cudaMemcpyHostToDevice));
  }
  void download(void* dst) const {
    ZORO_CUDA_CHECK(cudaMemcpy(dst, data(), bytes(), cudaMemcpyDeviceToHost));
  }
  bool guards_intact() const {
    std::vector<unsigned char> host(bytes() + 2 * kGuardBytes);
    ZORO_CUDA_CHECK(cudaMemcpy(host.data(), base_, host.size(), cudaMemcpyDeviceToHost));
    const auto ok = [](unsigned char b) { return b == kGuardByte; };
    return std::all_of(host.begin(), host.begin() + kGuardBytes, ok) &&
           std::all_of(host.end() - kGuardBytes, host.end(), ok);
  }

 private:
  void* base_ = nullptr;
  std::size_t elems_;
  std::size_t elem_bytes_;
};

class CudaKernelTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (device::cuda_device_count() == 0) {
      GTEST_SKIP() << device::cuda_unavailable_reason();
    }
    ZORO_CUDA_CHECK(cudaSetDevice(0));
    // A blocking stream: it orders after the legacy default stream, where the tests'
    // cudaMemset and pageable cudaMemcpy uploads run (a pageable upload may return before its
    // DMA lands).
    ZORO_CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    arrays_.clear();
    if (stream_ != nullptr) ZORO_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream_));
  }

  DType dtype() const { return GetParam().dtype; }
  const Shape& shape() const { return GetParam().shape; }
  bool is_bf16() const { return dtype() == DType::kBF16; }

  // Values as the device holds them: for bf16, rounded (in place) to bf16.
  void round_to_dtype(Floats& v) const {
    if (!is_bf16()) return;
    for (auto& x : v) x = bf16_to_float(float_to_bf16(x));
  }
  Floats random(std::mt19937_64& rng, std::size_t n, float lo = -1.f, float hi = 1.f) const {
    Floats v = testing::random_floats(rng, n, lo, hi);
    round_to_dtype(v);
    return v;
  }

  // A device array of the activation dtype (`fp32` forces float) holding `values`.
  DeviceArray& to_device(const Floats& values, bool fp32 = false) {
    const bool half = is_bf16() && !fp32;
    auto& a = arrays_.emplace_back(std::make_unique<DeviceArray>(values.size(), half ? 2 : 4));
    if (half) {
      std::vector<std::uint16_t> bits(values.size());
      for (std::size_t i = 0; i < values.size(); ++i) bits[i] = float_to_bf16(values[i]);
      a->upload(bits.data());
    } else {
      a->upload(values.data());
    }
    return *a;
  }
  DeviceArray& to_device_fp32(const Floats& values) { return to_device(values, true); }
  DeviceArray& ids_to_device(const std::vector<std::int32_t>& ids) {
    auto& a = arrays_.emplace_back(std::make_unique<DeviceArray>(ids.size(), 4));
    a->upload(ids.data());
    return *a;
  }
  Floats from_device(const DeviceArray& a, bool fp32 = false) {
    ZORO_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::size_t elem_bytes = is_bf16() && !fp32 ? 2 : 4;
    const std::size_t n = a.bytes() / elem_bytes;
    Floats out(n);
    if (elem_bytes == 2) {
      std::vector<std::uint16_t> bits(n);
      a.download(bits.data());
      for (std::size_t i = 0; i < n; ++i) out[i] = bf16_to_float(bits[i]);
    } else {
      a.download(out.data());
    }
    EXPECT_TRUE(a.guards_intact()) << "a kernel wrote outside its buffer";
    return out;
  }
  Floats from_device_fp32(const DeviceArray& a) { return from_device(a, true); }

  void expect_close(const char* what, const Floats& got, const Floats& want, Tolerance tol) const {
    ASSERT_EQ(got.size(), want.size()) << what;
    int failures = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double err = std::abs(static_cast<double>(got[i]) - want[i]);
      if (!(err <= tol.atol + tol.rtol * std::abs(want[i]))) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
        if (++failures == 10) return;
      }
    }
  }
  void expect_close(const char* what, const Floats& got, const Floats& want) const {
    expect_close(what, got, want, tolerance(dtype()));
  }

  // Calls fn with the element type of the case.
  template <class Fn>
  void with_elem(Fn&& fn) {
    ZORO_CUDA_CHECK(cudaDeviceSynchronize());  // every upload has landed
    if (is_bf16()) {
      fn(cuda::bf16{});
    } else {
      fn(float{});
    }
  }

  cudaStream_t stream_ = nullptr;

 private:
  std::vector<std::unique_ptr<DeviceArray>> arrays_;
};

std::vector<std::int32_t> random_ids(std::mt19937_64& rng, std::size_t n, int V) {
  std::uniform_int_distribution<int> dist(0, V - 1);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

TEST_P(CudaKernelTest, Embedding) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(101);
  const auto [B, T, C, NH, V] = shape();
  const std::size_t n = static_cast<std::size_t>(B) * T * C;
  const auto tokens = random_ids(rng, static_cast<std::size_t>(B) * T, V);
  const Floats wte = random(rng, static_cast<std::size_t>(V) * C);
  const Floats wpe = random(rng, static_cast<std::size_t>(T) * C);
  const Floats dout = random(rng, n);
  Floats dwte = testing::random_floats(rng, wte.size()),
         dwpe = testing::random_floats(rng, wpe.size());
  auto& d_tokens = ids_to_device(tokens);
  auto& d_wte = to_device(wte);
  auto& d_wpe = to_device(wpe);
  auto& d_out = to_device(Floats(n, 0.f));
  auto& d_dout = to_device(dout);
  auto& d_dwte = to_device_fp32(dwte);
  auto& d_dwpe = to_device_fp32(dwpe);
  with_elem([&](auto e) {
    using E = decltype(e);
    cuda::embedding_forward(d_out.as<E>(), d_tokens.as<std::int32_t>(), d_wte.as<E>(),
                            d_wpe.as<E>(), B, T, C, V, stream_);
    cuda::embedding_backward(d_dwte.as<float>(), d_dwpe.as<float>(), d_dout.as<E>(),
                             d_tokens.as<std::int32_t>(), B, T, C, V, stream_);
  });
  Floats out(n);
  ref::embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
  ref::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C, V);
  expect_close("out", from_device(d_out), out);
  expect_close("dwte", from_device_fp32(d_dwte), dwte);
  expect_close("dwpe", from_device_fp32(d_dwpe), dwpe);
}

TEST_P(CudaKernelTest, LayerNorm) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(102);
  const auto [B, T, C, NH, V] = shape();
  const int N = B * T;
  const std::size_t n = static_cast<std::size_t>(N) * C;
  // A row offset, so that a one-pass variance would lose digits.
  Floats x = testing::random_floats(rng, n, -1.f, 1.f);
  for (auto& v : x) v = v * 2.f + 3.f;
  round_to_dtype(x);
  const Floats w = random(rng, C, 0.5f, 1.5f), b = random(rng, C), dout = random(rng, n);
  Floats dx = random(rng, n), dw = testing::random_floats(rng, C),
         db = testing::random_floats(rng, C);
  auto& d_x = to_device(x);
  auto& d_w = to_device(w);
  auto& d_b = to_device(b);
  auto& d_dout = to_device(dout);
  auto& d_out = to_device(Floats(n, 0.f));
  auto& d_mean = to_device_fp32(Floats(N, 0.f));
  auto& d_rstd = to_device_fp32(Floats(N, 0.f));
  auto& d_dx = to_device(dx);
  auto& d_dw = to_device_fp32(dw);
  auto& d_db = to_device_fp32(db);
  Floats out(n), mean(N), rstd(N);
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  // Backward gets the reference's statistics, so it is tested on its own.
  auto& d_mean_ref = to_device_fp32(mean);
  auto& d_rstd_ref = to_device_fp32(rstd);
  with_elem([&](auto e) {
    using E = decltype(e);
    cuda::layernorm_forward(d_out.as<E>(), d_mean.as<float>(), d_rstd.as<float>(), d_x.as<E>(),
                            d_w.as<E>(), d_b.as<E>(), N, C, stream_);
    cuda::layernorm_backward(d_dx.as<E>(), d_dw.as<float>(), d_db.as<float>(), d_dout.as<E>(),
                             d_x.as<E>(), d_w.as<E>(), d_mean_ref.as<float>(),
                             d_rstd_ref.as<float>(), N, C, stream_);
  });
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  expect_close("out", from_device(d_out), out);
  expect_close("mean", from_device_fp32(d_mean), mean, {1e-5, 1e-5});
  expect_close("rstd", from_device_fp32(d_rstd), rstd, {1e-5, 1e-4});
  expect_close("dinp", from_device(d_dx), dx);
  expect_close("dweight", from_device_fp32(d_dw), dw);
  expect_close("dbias", from_device_fp32(d_db), db);
}

TEST_P(CudaKernelTest, GeluAndResidual) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(103);
  const auto [B, T, C, NH, V] = shape();
  const std::size_t n = static_cast<std::size_t>(B) * T * C;
  const Floats x = random(rng, n, -5.f, 5.f), y = random(rng, n), dout = random(rng, n);
  Floats dx = random(rng, n);
  auto& d_x = to_device(x);
  auto& d_y = to_device(y);
  auto& d_dout = to_device(dout);
  auto& d_gelu = to_device(Floats(n, 0.f));
  auto& d_sum = to_device(Floats(n, 0.f));
  auto& d_dx = to_device(dx);
  with_elem([&](auto e) {
    using E = decltype(e);
    cuda::gelu_forward(d_gelu.as<E>(), d_x.as<E>(), n, stream_);
    cuda::gelu_backward(d_dx.as<E>(), d_x.as<E>(), d_dout.as<E>(), n, stream_);
    cuda::residual_forward(d_sum.as<E>(), d_x.as<E>(), d_y.as<E>(), n, stream_);
  });
  Floats gelu(n), sum(n);
  ref::gelu_forward(gelu.data(), x.data(), n);
  ref::gelu_backward(dx.data(), x.data(), dout.data(), n);
  ref::residual_forward(sum.data(), x.data(), y.data(), n);
  expect_close("gelu", from_device(d_gelu), gelu);
  expect_close("dinp", from_device(d_dx), dx);
  expect_close("residual", from_device(d_sum), sum);
}

TEST_P(CudaKernelTest, Attention) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(104);
  const auto [B, T, C, NH, V] = shape();
  const std::size_t n = static_cast<std::size_t>(B) * T * C;
  const std::size_t rows = static_cast<std::size_t>(B) * NH * T;
  const Floats qkv = random(rng, 3 * n, -2.f, 2.f), dout = random(rng, n);
  Floats dqkv = random(rng, 3 * n);
  Floats out(n), lse(rows);
  ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
  auto& d_qkv = to_device(qkv);
  auto& d_out = to_device(Floats(n, 0.f));
  auto& d_lse = to_device_fp32(Floats(rows, 0.f));
  // Backward reads the reference's forward results (out as the device holds it).
  Floats out_rounded = out;
  round_to_dtype(out_rounded);
  auto& d_out_ref = to_device(out_rounded);
  auto& d_lse_ref = to_device_fp32(lse);
  auto& d_dout = to_device(dout);
  auto& d_dqkv = to_device(dqkv);
  with_elem([&](auto e) {
    using E = decltype(e);
    cuda::attention_forward(d_out.as<E>(), d_lse.as<float>(), d_qkv.as<E>(), B, T, C, NH, stream_);
    cuda::attention_backward(d_dqkv.as<E>(), d_dout.as<E>(), d_qkv.as<E>(), d_out_ref.as<E>(),
                             d_lse_ref.as<float>(), B, T, C, NH, stream_);
  });
  ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), out_rounded.data(), lse.data(), B,
                          T, C, NH);
  expect_close("out", from_device(d_out), out);
  expect_close("lse", from_device_fp32(d_lse), lse, {1e-4, 1e-4});
  expect_close("dqkv", from_device(d_dqkv), dqkv);
}

TEST_P(CudaKernelTest, SoftmaxCrossEntropy) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(105);
  const auto [B, T, C, NH, V] = shape();
  const int N = B * T;
  const std::int32_t kIgnore = -100;
  auto targets = random_ids(rng, N, V);
  if (N > 1) targets[N / 2] = kIgnore;
  const Floats logits = random(rng, static_cast<std::size_t>(N) * V, -8.f, 8.f);
  const float scale =
      1.f / static_cast<float>(ref::count_valid_targets(targets.data(), N, kIgnore));
  auto& d_logits = to_device(logits);
  auto& d_targets = ids_to_device(targets);
  auto& d_losses = to_device_fp32(Floats(N, -1.f));
  auto& d_lse = to_device_fp32(Floats(N, 0.f));
  auto& d_dlogits = to_device(random(rng, logits.size()));  // written, not added
  auto& d_in_place = to_device(logits);                     // dlogits aliasing logits
  Floats losses(N), lse(N), dlogits(logits.size());
  ref::softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V,
                                     kIgnore);
  auto& d_lse_ref = to_device_fp32(lse);
  with_elem([&](auto e) {
    using E = decltype(e);
    cuda::softmax_cross_entropy_forward(d_losses.as<float>(), d_lse.as<float>(), d_logits.as<E>(),
                                        d_targets.as<std::int32_t>(), N, V, kIgnore, stream_);
    cuda::softmax_cross_entropy_backward(d_dlogits.as<E>(), d_logits.as<E>(), d_lse_ref.as<float>(),
                                         d_targets.as<std::int32_t>(), N, V, scale, kIgnore,
                                         stream_);
    cuda::softmax_cross_entropy_backward(d_in_place.as<E>(), d_in_place.as<E>(),
                                         d_lse_ref.as<float>(), d_targets.as<std::int32_t>(), N, V,
                                         scale, kIgnore, stream_);
  });
  ref::softmax_cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N,
                                      V, scale, kIgnore);
  // Losses and lse are fp32 sums of exp over fp32-widened logits on both sides.
  expect_close("losses", from_device_fp32(d_losses), losses, {1e-4, 1e-5});
  expect_close("lse", from_device_fp32(d_lse), lse, {1e-4, 1e-5});
  expect_close("dlogits", from_device(d_dlogits), dlogits);
  EXPECT_EQ(from_device(d_in_place), from_device(d_dlogits));
}

TEST_P(CudaKernelTest, Matmul) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(106);
  const auto [B, T, C, NH, V] = shape();
  // A layer of the model's shape: N = B*T rows, IC = C, OC = V (odd).
  const int N = B * T, IC = C, OC = V;
  const Floats x = random(rng, static_cast<std::size_t>(N) * IC);
  const Floats w = random(rng, static_cast<std::size_t>(OC) * IC), b = random(rng, OC);
  const Floats dout = random(rng, static_cast<std::size_t>(N) * OC);
  Floats dx = random(rng, x.size()), dw = testing::random_floats(rng, w.size()),
         db = testing::random_floats(rng, OC);
  auto& d_x = to_device(x);
  auto& d_w = to_device(w);
  auto& d_b = to_device(b);
  auto& d_out = to_device(Floats(static_cast<std::size_t>(N) * OC, 0.f));
  auto& d_out_nobias = to_device(Floats(static_cast<std::size_t>(N) * OC, 0.f));
  auto& d_dout = to_device(dout);
  auto& d_dx = to_device(dx);
  auto& d_dw = to_device_fp32(dw);
  auto& d_db = to_device_fp32(db);
  {
    cuda::CublasContext ctx(stream_);
    with_elem([&](auto e) {
      using E = decltype(e);
      cuda::matmul_forward(ctx, d_out.as<E>(), d_x.as<E>(), d_w.as<E>(), d_b.as<E>(), N, IC, OC);
      cuda::matmul_forward(ctx, d_out_nobias.as<E>(), d_x.as<E>(), d_w.as<E>(),
                           static_cast<const E*>(nullptr), N, IC, OC);
      cuda::matmul_backward(ctx, d_dx.as<E>(), d_dw.as<float>(), d_db.as<float>(), d_dout.as<E>(),
                            d_x.as<E>(), d_w.as<E>(), N, IC, OC);
    });
    ZORO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  Floats out(static_cast<std::size_t>(N) * OC), out_nobias(out.size());
  ref::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC);
  ref::matmul_forward(out_nobias.data(), x.data(), w.data(), nullptr, N, IC, OC);
  ref::matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, IC, OC);
  expect_close("out", from_device(d_out), out);
  expect_close("out (no bias)", from_device(d_out_nobias), out_nobias);
  expect_close("dinp", from_device(d_dx), dx);
  expect_close("dweight", from_device_fp32(d_dw), dw);
  expect_close("dbias", from_device_fp32(d_db), db);
}

const Shape kShapes[] = {
    {1, 1, 8, 1, 3},        // a single token: attention is the identity on v
    {2, 37, 45, 3, 97},     // T % 32 != 0, C % 8 != 0, hs = 15, V odd
    {3, 19, 20, 4, 33},     // hs = 5
    {2, 70, 96, 2, 257},    // several key blocks per query, hs = 48
    {1, 33, 384, 3, 1001},  // hs = 128: four columns per lane
    {1, 9, 256, 1, 7},      // hs = 256, the largest supported
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : kShapes) cases.push_back({dtype, s});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(DTypeByShape, CudaKernelTest, ::testing::ValuesIn(all_cases()), case_name);

// Casts are exact: bit-for-bit what runtime/base/half.h gives, for finite values, signed
// zeros, subnormals of both formats and values that overflow fp16.
TEST(CudaCasts, BitExactWithHalfH) {
  if (device::cuda_device_count() == 0) GTEST_SKIP() << device::cuda_unavailable_reason();
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(107);
  Floats x = testing::random_floats(rng, 4099, -70000.f, 70000.f);
  const Floats special = {0.f,     -0.f,    1e-40f, -3e-39f, 6e-8f,       3e-5f,
                          65504.f, 65520.f, 1e30f,  -1e-45f, 1.00390625f, 1.01171875f};
  x.insert(x.end(), special.begin(), special.end());
  for (std::size_t i = 0; i < 1000; ++i) x[i] *= 1e-9f;  // the fp16 subnormal range (below 6.1e-5)
  const std::size_t n = x.size();
  DeviceArray d_x(n, 4), d_h(n, 2), d_back(n, 4);
  d_x.upload(x.data());
  cudaStream_t stream = nullptr;
  ZORO_CUDA_CHECK(cudaStreamCreate(&stream));
  std::vector<std::uint16_t> bits(n);
  Floats back(n);
  cuda::cast_f32_to_bf16(static_cast<cuda::bf16*>(d_h.data()), d_x.as<float>(), n, stream);
  cuda::cast_bf16_to_f32(d_back.as<float>(), static_cast<const cuda::bf16*>(d_h.data()), n, stream);
  ZORO_CUDA_CHECK(cudaStreamSynchronize(stream));
  d_h.download(bits.data());
  d_back.download(back.data());
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(bits[i], float_to_bf16(x[i])) << "bf16 of " << x[i];
    ASSERT_EQ(back[i], bf16_to_float(bits[i])) << "bf16 back of " << x[i];
  }
  cuda::cast_f32_to_f16(static_cast<__half*>(d_h.data()), d_x.as<float>(), n, stream);
  cuda::cast_f16_to_f32(d_back.as<float>(), static_cast<const __half*>(d_h.data()), n, stream);
  ZORO_CUDA_CHECK(cudaStreamSynchronize(stream));
  d_h.download(bits.data());
  d_back.download(back.data());
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(bits[i], float_to_fp16(x[i])) << "fp16 of " << x[i];
    ASSERT_EQ(back[i], fp16_to_float(bits[i])) << "fp16 back of " << x[i];
  }
  EXPECT_TRUE(d_h.guards_intact());
  EXPECT_TRUE(d_back.guards_intact());
  ZORO_CUDA_CHECK(cudaStreamDestroy(stream));
}

// A stream of the host backend has no CUDA handle: asking for one is refused, not silently
// the legacy default stream.
TEST(CudaStreams, HostStreamRefused) {
  auto dev = device::open_device("host:mem=16MiB");
  auto stream = dev->create_stream();
  EXPECT_THROW(cuda::native_stream(*stream), InvalidArgument);
}

}  // namespace
}  // namespace zoro::kernels

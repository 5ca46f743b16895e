// Gpt's CUDA compute (CUDA builds only): the same pass as RefGpt (ref_gpt.h: Notes [Gradient
// hand-off] and [Activation recomputation]) on kernels/cuda, activations in Elem = bf16 for
// bf16 working weights (float for fp32), saved statistics and parameter gradients in fp32
// (Note [CUDA gradient types] in kernels/cuda/kernels.h), GEMMs on cuBLAS bound to the
// compute stream. Nothing here waits for the GPU but take_losses() and logits_row().
#include <bit>
#include <type_traits>
#include <vector>

#include "examples/zoro_train/model/gpt_compute.h"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"

namespace zoro::train::detail {

namespace {

namespace kc = kernels::cuda;
using BT = BlockTensor;

// Forwards whose losses may wait in pinned memory for take_losses().
constexpr std::size_t kLossSlots = Gpt::kMaxPendingLosses;

template <class Elem>
class CudaCompute final : public GptCompute {
 public:
  CudaCompute(const GptConfig& config, ParamStore& params, const GptOptions& options)
      : cfg_(config),
        params_(params),
        stream_(params.compute_stream()),
        cs_(kc::native_stream(params.compute_stream())),
        cublas_(cs_),
        recompute_(options.recompute),
        max_tokens_(options.max_batch * options.seq_len) {
    ZORO_CHECK(cfg_.head_size() <= kc::kMaxHeadSize,
               "model head size channels/heads=" << cfg_.head_size() << " exceeds the CUDA "
                                                 << "attention kernel's " << kc::kMaxHeadSize);
    const std::size_t N = static_cast<std::size_t>(max_tokens_);
    const std::size_t C = static_cast<std::size_t>(cfg_.channels);
    const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
    const std::size_t NC = N * C;
    const std::size_t L = static_cast<std::size_t>(cfg_.layers);
    const std::size_t NH = static_cast<std::size_t>(cfg_.heads);
    // Elem activations, then fp32 statistics and gradient scratch: two allocations.
    std::vector<std::pair<Elem**, std::size_t>> e;
    std::vector<std::pair<float**, std::size_t>> f;
    res_.assign(L + 1, nullptr);
    for (auto& r : res_) e.push_back({&r, NC});
    layers_.assign(recompute_ ? 1 : L, Acts{});
    for (auto& a : layers_) {
      for (auto [p, n] : {std::pair{&a.ln1, NC},
                          {&a.qkv, 3 * NC},
                          {&a.atty, NC},
                          {&a.res2, NC},
                          {&a.ln2, NC},
                          {&a.fch, 4 * NC},
                          {&a.fchg, 4 * NC}}) {
        e.push_back({p, n});
      }
      for (auto [p, n] : {std::pair{&a.mean1, N},
                          {&a.rstd1, N},
                          {&a.mean2, N},
                          {&a.rstd2, N},
                          {&a.lse, N * NH}}) {
        f.push_back({p, n});
      }
    }
    for (auto [p, n] : {std::pair{&tmp_, NC},
                        {&lnf_, NC},
                        {&logits_, N * V},
                        {&dres_, NC},
                        {&da_, 4 * NC},
                        {&db_, 4 * NC},
                        {&dc_, NC}}) {
      e.push_back({p, n});
    }
    gw_elems_ = std::max(4 * C * C, static_cast<std::size_t>(cfg_.max_seq) * C);
    for (auto [p, n] : {std::pair{&meanf_, N},
                        {&rstdf_, N},
                        {&losses_, N},
                        {&ce_lse_, N},
                        {&gw_, gw_elems_},
                        {&gb_, 4 * C},
                        {&dwte_, V * C}}) {
      f.push_back({p, n});
    }
    elems_ = carve(e);
    floats_ = carve(f);
    losses_host_ = params_.device().allocate(device::MemoryKind::kPinnedHost, kLossSlots * N * 4);
    const auto& tensors = params_.tensors();
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      weights_.push_back(static_cast<const Elem*>(params_.param_data(t)));
    }
  }

  ~CudaCompute() override {
    try {
      stream_.synchronize();  // cuBLAS work and loss copies use this object's memory
    } catch (const std::exception& ex) {
      ZORO_LOG(kError) << "Gpt shutdown: " << ex.what();
    }
  }

  void forward(const DeviceBatch& batch) override {
    const int B = batch.B, T = batch.T;
    check_batch(B, T);
    const int N = B * T, C = cfg_.channels, V = cfg_.vocab;
    kc::embedding_forward<Elem>(res_[0], batch.inputs, w(kWte), w(kWpe), B, T, C, V, cs_);
    for (int l = 0; l < cfg_.layers; ++l) block_forward(l, acts(l), res_[l], res_[l + 1], B, T);
    kc::layernorm_forward<Elem>(lnf_, meanf_, rstdf_, res_[cfg_.layers], w(lnf_weight(cfg_)),
                                w(lnf_bias(cfg_)), N, C, cs_);
    kc::matmul_forward<Elem>(cublas_, logits_, lnf_, w(kWte), nullptr, N, C, V);
    if (batch.targets == nullptr) return;
    kc::softmax_cross_entropy_forward<Elem>(losses_, ce_lse_, logits_, batch.targets, N, V,
                                            kc::kNoIgnoreIndex, cs_);
    ZORO_CHECK(pending_.size() < kLossSlots,
               kLossSlots << " forwards without take_losses(): their losses would be lost");
    float* slot =
        losses_host_.as<float>() + pending_.size() * static_cast<std::size_t>(max_tokens_);
    stream_.copy_async(slot, losses_, static_cast<std::size_t>(N) * 4);
    pending_.push_back({slot, N});
  }

  void backward(const DeviceBatch& batch, float dloss) override {
    const int B = batch.B, T = batch.T;
    check_batch(B, T);
    ZORO_CHECK(batch.targets != nullptr, "backward() needs targets");
    const int N = B * T, C = cfg_.channels, V = cfg_.vocab;
    const std::size_t nc = static_cast<std::size_t>(N) * C;
    const std::size_t c = static_cast<std::size_t>(C);
    zero(dwte_, static_cast<std::size_t>(V) * c);
    zero(dc_, nc);
    kc::softmax_cross_entropy_backward<Elem>(logits_, logits_, ce_lse_, batch.targets, N, V,
                                             dloss / static_cast<float>(N), kc::kNoIgnoreIndex,
                                             cs_);
    kc::matmul_backward<Elem>(cublas_, dc_, dwte_, nullptr, logits_, lnf_, w(kWte), N, C, V);
    zero(dres_, nc);
    zero(gw_, c);
    zero(gb_, c);
    kc::layernorm_backward<Elem>(dres_, gw_, gb_, dc_, res_[cfg_.layers], w(lnf_weight(cfg_)),
                                 meanf_, rstdf_, N, C, cs_);
    params_.hand_grad(lnf_weight(cfg_), gw_);
    params_.hand_grad(lnf_bias(cfg_), gb_);
    for (int l = cfg_.layers - 1; l >= 0; --l) {
      if (recompute_) block_forward(l, acts(l), res_[l], tmp_, B, T);
      block_backward(l, acts(l), res_[l], B, T);
    }
    zero(gw_, static_cast<std::size_t>(cfg_.max_seq) * c);
    kc::embedding_backward<Elem>(dwte_, gw_, dres_, batch.inputs, B, T, C, V, cs_);
    params_.hand_grad(kWpe, gw_);
    params_.hand_grad(kWte, dwte_);
  }

  std::vector<double> take_losses() override {
    stream_.synchronize();
    std::vector<double> out;
    for (const auto& [slot, n] : pending_) {
      double sum = 0;
      for (int i = 0; i < n; ++i) sum += slot[i];
      out.push_back(sum / n);
    }
    pending_.clear();
    return out;
  }

  void argmax(std::int32_t* out, int rows) override {
    kc::argmax_rows<Elem>(out, logits_, rows, cfg_.vocab, cs_);
  }

  std::vector<float> logits_row(int row) override {
    stream_.synchronize();
    const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
    std::vector<Elem> raw(V);
    params_.device().copy(raw.data(), logits_ + static_cast<std::size_t>(row) * V,
                          V * sizeof(Elem));
    std::vector<float> out(V);
    for (std::size_t i = 0; i < V; ++i) {
      if constexpr (std::is_same_v<Elem, float>) {
        out[i] = raw[i];
      } else {
        out[i] = bf16_to_float(std::bit_cast<std::uint16_t>(raw[i]));
      }
    }
    return out;
  }

  std::size_t device_bytes() const override { return elems_.bytes() + floats_.bytes(); }

 private:
  struct Acts {
    Elem *ln1, *qkv, *atty, *res2, *ln2, *fch, *fchg;
    float *mean1, *rstd1, *mean2, *rstd2, *lse;
  };

  template <class X>
  device::Buffer carve(const std::vector<std::pair<X**, std::size_t>>& plan) {
    auto round = [](std::size_t n) { return (n + 63) / 64 * 64; };
    std::size_t total = 0;
    for (const auto& [p, n] : plan) total += round(n);
    device::Buffer b = params_.device().allocate(device::MemoryKind::kDevice, total * sizeof(X));
    X* at = b.as<X>();
    for (const auto& [p, n] : plan) {
      *p = at;
      at += round(n);
    }
    return b;
  }

  void check_batch(int B, int T) const {
    ZORO_CHECK(
        B > 0 && T > 0 && T <= cfg_.max_seq && static_cast<std::int64_t>(B) * T <= max_tokens_,
        "batch B=" << B << " T=" << T << ": T must be in [1, max_seq=" << cfg_.max_seq
                   << "] and B*T at most the " << max_tokens_
                   << " tokens the activations were sized for");
  }
  template <class X>
  void zero(X* p, std::size_t n) {
    stream_.memset_async(p, 0, n * sizeof(X));
  }
  const Elem* w(std::size_t t) const { return weights_[t]; }
  const Elem* w(int l, BT t) const { return weights_[block_tensor(l, t)]; }
  const Acts& acts(int l) const { return layers_[recompute_ ? 0 : l]; }

  void block_forward(int l, const Acts& a, const Elem* x, Elem* out, int B, int T) {
    const int N = B * T, C = cfg_.channels, NH = cfg_.heads;
    const std::size_t nc = static_cast<std::size_t>(N) * C;
    kc::layernorm_forward<Elem>(a.ln1, a.mean1, a.rstd1, x, w(l, BT::kLn1Weight),
                                w(l, BT::kLn1Bias), N, C, cs_);
    kc::matmul_forward<Elem>(cublas_, a.qkv, a.ln1, w(l, BT::kQkvWeight), w(l, BT::kQkvBias), N, C,
                             3 * C);
    kc::attention_forward<Elem>(a.atty, a.lse, a.qkv, B, T, C, NH, cs_);
    kc::matmul_forward<Elem>(cublas_, tmp_, a.atty, w(l, BT::kAttnProjWeight),
                             w(l, BT::kAttnProjBias), N, C, C);
    kc::residual_forward<Elem>(a.res2, x, tmp_, nc, cs_);
    kc::layernorm_forward<Elem>(a.ln2, a.mean2, a.rstd2, a.res2, w(l, BT::kLn2Weight),
                                w(l, BT::kLn2Bias), N, C, cs_);
    kc::matmul_forward<Elem>(cublas_, a.fch, a.ln2, w(l, BT::kFcWeight), w(l, BT::kFcBias), N, C,
                             4 * C);
    kc::gelu_forward<Elem>(a.fchg, a.fch, 4 * nc, cs_);
    kc::matmul_forward<Elem>(cublas_, tmp_, a.fchg, w(l, BT::kFcProjWeight), w(l, BT::kFcProjBias),
                             N, 4 * C, C);
    kc::residual_forward<Elem>(out, a.res2, tmp_, nc, cs_);
  }

  void hand_pair(int l, BT weight, BT bias) {
    params_.hand_grad(block_tensor(l, weight), gw_);
    params_.hand_grad(block_tensor(l, bias), gb_);
  }

  void block_backward(int l, const Acts& a, const Elem* x, int B, int T) {
    const int N = B * T, C = cfg_.channels, NH = cfg_.heads;
    const std::size_t nc = static_cast<std::size_t>(N) * C;
    const std::size_t c = static_cast<std::size_t>(C);
    zero(da_, 4 * nc);
    zero(gw_, 4 * c * c);
    zero(gb_, c);
    kc::matmul_backward<Elem>(cublas_, da_, gw_, gb_, dres_, a.fchg, w(l, BT::kFcProjWeight), N,
                              4 * C, C);
    hand_pair(l, BT::kFcProjWeight, BT::kFcProjBias);
    zero(db_, 4 * nc);
    kc::gelu_backward<Elem>(db_, a.fch, da_, 4 * nc, cs_);
    zero(dc_, nc);
    zero(gw_, 4 * c * c);
    zero(gb_, 4 * c);
    kc::matmul_backward<Elem>(cublas_, dc_, gw_, gb_, db_, a.ln2, w(l, BT::kFcWeight), N, C, 4 * C);
    hand_pair(l, BT::kFcWeight, BT::kFcBias);
    zero(gw_, c);
    zero(gb_, c);
    kc::layernorm_backward<Elem>(dres_, gw_, gb_, dc_, a.res2, w(l, BT::kLn2Weight), a.mean2,
                                 a.rstd2, N, C, cs_);
    hand_pair(l, BT::kLn2Weight, BT::kLn2Bias);
    zero(dc_, nc);
    zero(gw_, c * c);
    zero(gb_, c);
    kc::matmul_backward<Elem>(cublas_, dc_, gw_, gb_, dres_, a.atty, w(l, BT::kAttnProjWeight), N,
                              C, C);
    hand_pair(l, BT::kAttnProjWeight, BT::kAttnProjBias);
    zero(db_, 3 * nc);
    kc::attention_backward<Elem>(db_, dc_, a.qkv, a.atty, a.lse, B, T, C, NH, cs_);
    zero(dc_, nc);
    zero(gw_, 3 * c * c);
    zero(gb_, 3 * c);
    kc::matmul_backward<Elem>(cublas_, dc_, gw_, gb_, db_, a.ln1, w(l, BT::kQkvWeight), N, C,
                              3 * C);
    hand_pair(l, BT::kQkvWeight, BT::kQkvBias);
    zero(gw_, c);
    zero(gb_, c);
    kc::layernorm_backward<Elem>(dres_, gw_, gb_, dc_, x, w(l, BT::kLn1Weight), a.mean1, a.rstd1, N,
                                 C, cs_);
    hand_pair(l, BT::kLn1Weight, BT::kLn1Bias);
  }

  GptConfig cfg_;
  ParamStore& params_;
  device::Stream& stream_;
  cudaStream_t cs_;
  kc::CublasContext cublas_;
  bool recompute_;
  int max_tokens_;
  std::vector<const Elem*> weights_;
  std::vector<Elem*> res_;
  std::vector<Acts> layers_;
  Elem *tmp_, *lnf_, *logits_, *dres_, *da_, *db_, *dc_;
  float *meanf_, *rstdf_, *losses_, *ce_lse_, *gw_, *gb_, *dwte_;
  std::size_t gw_elems_ = 0;
  device::Buffer elems_, floats_, losses_host_;
  std::vector<std::pair<const float*, int>> pending_;
};

}  // namespace

std::unique_ptr<GptCompute> make_cuda_compute(const GptConfig& config, ParamStore& params,
                                              const GptOptions& options) {
  switch (params.dtype()) {
    case DType::kBF16:
      return std::make_unique<CudaCompute<kc::bf16>>(config, params, options);
    case DType::kF32:
      return std::make_unique<CudaCompute<float>>(config, params, options);
    case DType::kF16:
      break;
  }
  ZORO_THROW(Unsupported,
             "precision.dtype=fp16 on CUDA: the CUDA kernels compute in bf16 or "
             "fp32 (use dtype bf16 or fp32)");
}

}  // namespace zoro::train::detail

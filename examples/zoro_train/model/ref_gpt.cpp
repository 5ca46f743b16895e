#include "examples/zoro_train/model/ref_gpt.h"

#include <algorithm>
#include <string>
#include <utility>

#include "kernels/ref/kernels.h"
#include "runtime/base/check.h"

namespace zoro::train {

namespace k = kernels::ref;

template <class R>
RefGpt<R>::RefGpt(const GptConfig& config, int max_tokens, bool recompute, device::Device& device,
                  device::Stream& stream)
    : cfg_(config), max_tokens_(max_tokens), recompute_(recompute), stream_(stream) {
  cfg_.validate();
  ZORO_CHECK(max_tokens > 0, "max_tokens=" << max_tokens << " must be positive");
  const std::size_t N = static_cast<std::size_t>(max_tokens);
  const std::size_t C = static_cast<std::size_t>(cfg_.channels);
  const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
  const std::size_t NH = static_cast<std::size_t>(cfg_.heads);
  const std::size_t L = static_cast<std::size_t>(cfg_.layers);
  const std::size_t NC = N * C;
  gw_elems_ = std::max({4 * C * C, static_cast<std::size_t>(cfg_.max_seq) * C});
  // One allocation, carved into 64-element aligned pieces (a cache line in double).
  std::vector<std::pair<R**, std::size_t>> plan;
  res_.assign(L + 1, nullptr);
  for (auto& r : res_) plan.push_back({&r, NC});
  layers_.assign(recompute ? 1 : L, LayerActs{});
  for (auto& a : layers_) {
    for (auto [p, n] : {std::pair{&a.ln1, NC},
                        {&a.mean1, N},
                        {&a.rstd1, N},
                        {&a.qkv, 3 * NC},
                        {&a.atty, NC},
                        {&a.lse, N * NH},
                        {&a.res2, NC},
                        {&a.ln2, NC},
                        {&a.mean2, N},
                        {&a.rstd2, N},
                        {&a.fch, 4 * NC},
                        {&a.fchg, 4 * NC}}) {
      plan.push_back({p, n});
    }
  }
  for (auto [p, n] : {std::pair{&tmp_, NC},
                      {&lnf_, NC},
                      {&meanf_, N},
                      {&rstdf_, N},
                      {&logits_, N * V},
                      {&losses_, N},
                      {&ce_lse_, N},
                      {&dres_, NC},
                      {&da_, 4 * NC},
                      {&db_, 4 * NC},
                      {&dc_, NC},
                      {&gw_, gw_elems_},
                      {&gb_, 4 * C},
                      {&dwte_, V * C}}) {
    plan.push_back({p, n});
  }
  auto round = [](std::size_t n) { return (n + 63) / 64 * 64; };
  std::size_t total = 0;
  for (const auto& [p, n] : plan) total += round(n);
  buffer_ = device.allocate(device::MemoryKind::kDevice, total * sizeof(R));
  R* at = buffer_.as<R>();
  for (const auto& [p, n] : plan) {
    *p = at;
    at += round(n);
  }
}

template <class R>
RefGpt<R>::~RefGpt() {
  try {
    stream_.synchronize();  // no task may outlive the buffers it writes
  } catch (const std::exception& e) {
    ZORO_LOG(kError) << "RefGpt shutdown: " << e.what();
  }
}

template <class R>
void RefGpt<R>::set_weights(std::vector<const R*> weights) {
  ZORO_CHECK(
      weights.size() == num_tensors(cfg_),
      "set_weights: " << weights.size() << " tensors given, the model has " << num_tensors(cfg_));
  weights_ = std::move(weights);
}

template <class R>
template <class Fn>
void RefGpt<R>::enqueue(const char* label, Fn&& fn) {
  stream_.launch_host_fn(label, std::forward<Fn>(fn));
}

template <class R>
void RefGpt<R>::zero(R* p, std::size_t n) {
  stream_.memset_async(p, 0, n * sizeof(R));
}

template <class R>
void RefGpt<R>::block_forward(int l, const LayerActs& a, const R* x, R* out, int B, int T) {
  const int N = B * T, C = cfg_.channels, NH = cfg_.heads;
  const std::size_t nc = static_cast<std::size_t>(N) * C;
  using BT = BlockTensor;
  R* tmp = tmp_;
  enqueue("ln_1 fwd", [=, w = w(l, BT::kLn1Weight), b = w(l, BT::kLn1Bias)] {
    k::layernorm_forward(a.ln1, a.mean1, a.rstd1, x, w, b, N, C);
  });
  enqueue("c_attn fwd", [=, w = w(l, BT::kQkvWeight), b = w(l, BT::kQkvBias)] {
    k::matmul_forward(a.qkv, a.ln1, w, b, N, C, 3 * C);
  });
  enqueue("attention fwd", [=] { k::attention_forward(a.atty, a.lse, a.qkv, B, T, C, NH); });
  enqueue("attn.c_proj fwd", [=, w = w(l, BT::kAttnProjWeight), b = w(l, BT::kAttnProjBias)] {
    k::matmul_forward(tmp, a.atty, w, b, N, C, C);
    k::residual_forward(a.res2, x, tmp, nc);
  });
  enqueue("ln_2 fwd", [=, w = w(l, BT::kLn2Weight), b = w(l, BT::kLn2Bias)] {
    k::layernorm_forward(a.ln2, a.mean2, a.rstd2, a.res2, w, b, N, C);
  });
  enqueue("c_fc fwd", [=, w = w(l, BT::kFcWeight), b = w(l, BT::kFcBias)] {
    k::matmul_forward(a.fch, a.ln2, w, b, N, C, 4 * C);
    k::gelu_forward(a.fchg, a.fch, 4 * nc);
  });
  enqueue("mlp.c_proj fwd", [=, w = w(l, BT::kFcProjWeight), b = w(l, BT::kFcProjBias)] {
    k::matmul_forward(tmp, a.fchg, w, b, N, 4 * C, C);
    k::residual_forward(out, a.res2, tmp, nc);
  });
}

template <class R>
void RefGpt<R>::forward(const std::int32_t* inputs, const std::int32_t* targets, int B, int T) {
  ZORO_CHECK(weights_.size() == num_tensors(cfg_), "forward() before set_weights()");
  ZORO_CHECK(B > 0 && T > 0, "batch B=" << B << " T=" << T << " must be positive");
  ZORO_CHECK(T <= cfg_.max_seq,
             "sequence length T=" << T << " exceeds the model's max_seq=" << cfg_.max_seq);
  ZORO_CHECK(static_cast<std::int64_t>(B) * T <= max_tokens_,
             "batch B=" << B << " x T=" << T << " exceeds the " << max_tokens_
                        << " tokens the activations were sized for");
  const int N = B * T, C = cfg_.channels, V = cfg_.vocab;
  enqueue("embedding fwd", [=, out = res_[0], wte = w(kWte), wpe = w(kWpe)] {
    k::embedding_forward(out, inputs, wte, wpe, B, T, C, V);
  });
  for (int l = 0; l < cfg_.layers; ++l) block_forward(l, acts(l), res_[l], res_[l + 1], B, T);
  enqueue("ln_f fwd",
          [=, x = res_[cfg_.layers], w = w(lnf_weight(cfg_)), b = w(lnf_bias(cfg_)), lnf = lnf_,
           mean = meanf_, rstd = rstdf_] { k::layernorm_forward(lnf, mean, rstd, x, w, b, N, C); });
  enqueue("lm_head fwd", [=, logits = logits_, lnf = lnf_, wte = w(kWte)] {
    k::matmul_forward<R>(logits, lnf, wte, nullptr, N, C, V);
  });
  if (targets == nullptr) return;
  enqueue("cross-entropy fwd", [=, this, losses = losses_, lse = ce_lse_, logits = logits_] {
    k::softmax_cross_entropy_forward(losses, lse, logits, targets, N, V);
    loss_ = k::mean_loss(losses, targets, N);
  });
}

template <class R>
void RefGpt<R>::block_backward(int l, const LayerActs& a, const R* x, int B, int T,
                               const GradHandler& hand) {
  const int N = B * T, C = cfg_.channels, NH = cfg_.heads;
  const std::size_t nc = static_cast<std::size_t>(N) * C;
  const std::size_t c = static_cast<std::size_t>(C);
  using BT = BlockTensor;
  R *dres = dres_, *da = da_, *db = db_, *dc = dc_, *gw = gw_, *gb = gb_;
  auto hand_pair = [&](BT weight, BT bias) {
    hand(block_tensor(l, weight), gw);
    hand(block_tensor(l, bias), gb);
  };
  // MLP: out = res2 + c_proj(gelu(c_fc(ln_2(res2)))); dres holds d out.
  zero(da, 4 * nc);
  zero(gw, 4 * c * c);
  zero(gb, c);
  enqueue("mlp.c_proj bwd", [=, w = w(l, BT::kFcProjWeight)] {
    k::matmul_backward(da, gw, gb, dres, a.fchg, w, N, 4 * C, C);
  });
  hand_pair(BT::kFcProjWeight, BT::kFcProjBias);
  zero(db, 4 * nc);
  enqueue("gelu bwd", [=] { k::gelu_backward(db, a.fch, da, 4 * nc); });
  zero(dc, nc);
  zero(gw, 4 * c * c);
  zero(gb, 4 * c);
  enqueue("c_fc bwd", [=, w = w(l, BT::kFcWeight)] {
    k::matmul_backward(dc, gw, gb, db, a.ln2, w, N, C, 4 * C);
  });
  hand_pair(BT::kFcWeight, BT::kFcBias);
  zero(gw, c);
  zero(gb, c);
  enqueue("ln_2 bwd", [=, w = w(l, BT::kLn2Weight)] {
    k::layernorm_backward(dres, gw, gb, dc, a.res2, w, a.mean2, a.rstd2, N, C);
  });
  hand_pair(BT::kLn2Weight, BT::kLn2Bias);
  // Attention: res2 = x + c_proj(attention(c_attn(ln_1(x)))); dres now holds d res2.
  zero(dc, nc);
  zero(gw, c * c);
  zero(gb, c);
  enqueue("attn.c_proj bwd", [=, w = w(l, BT::kAttnProjWeight)] {
    k::matmul_backward(dc, gw, gb, dres, a.atty, w, N, C, C);
  });
  hand_pair(BT::kAttnProjWeight, BT::kAttnProjBias);
  zero(db, 3 * nc);
  enqueue("attention bwd",
          [=] { k::attention_backward(db, dc, a.qkv, a.atty, a.lse, B, T, C, NH); });
  zero(dc, nc);
  zero(gw, 3 * c * c);
  zero(gb, 3 * c);
  enqueue("c_attn bwd", [=, w = w(l, BT::kQkvWeight)] {
    k::matmul_backward(dc, gw, gb, db, a.ln1, w, N, C, 3 * C);
  });
  hand_pair(BT::kQkvWeight, BT::kQkvBias);
  zero(gw, c);
  zero(gb, c);
  enqueue("ln_1 bwd", [=, w = w(l, BT::kLn1Weight)] {
    k::layernorm_backward(dres, gw, gb, dc, x, w, a.mean1, a.rstd1, N, C);
  });
  hand_pair(BT::kLn1Weight, BT::kLn1Bias);
}

template <class R>
void RefGpt<R>::backward(const std::int32_t* inputs, const std::int32_t* targets, int B, int T,
                         R dloss, const GradHandler& hand) {
  ZORO_CHECK(targets != nullptr, "backward() needs targets");
  ZORO_CHECK(static_cast<bool>(hand), "backward() needs a gradient handler");
  const int N = B * T, C = cfg_.channels, V = cfg_.vocab;
  const std::size_t nc = static_cast<std::size_t>(N) * C;
  const std::size_t c = static_cast<std::size_t>(C);
  const R scale = dloss / static_cast<R>(N);
  // LM head: logits = ln_f(x_L) . wte^T; dlogits overwrite the logits.
  zero(dwte_, static_cast<std::size_t>(V) * c);
  zero(dc_, nc);
  enqueue("lm_head bwd",
          [=, logits = logits_, lse = ce_lse_, dc = dc_, dwte = dwte_, lnf = lnf_, wte = w(kWte)] {
            k::softmax_cross_entropy_backward(logits, logits, lse, targets, N, V, scale);
            k::matmul_backward<R>(dc, dwte, nullptr, logits, lnf, wte, N, C, V);
          });
  zero(dres_, nc);
  zero(gw_, c);
  zero(gb_, c);
  enqueue("ln_f bwd", [=, dres = dres_, gw = gw_, gb = gb_, dc = dc_, x = res_[cfg_.layers],
                       w = w(lnf_weight(cfg_)), mean = meanf_, rstd = rstdf_] {
    k::layernorm_backward(dres, gw, gb, dc, x, w, mean, rstd, N, C);
  });
  hand(lnf_weight(cfg_), gw_);
  hand(lnf_bias(cfg_), gb_);
  for (int l = cfg_.layers - 1; l >= 0; --l) {
    // Note [Activation recomputation]: the block's output goes to tmp_, not res_[l + 1].
    if (recompute_) block_forward(l, acts(l), res_[l], tmp_, B, T);
    block_backward(l, acts(l), res_[l], B, T, hand);
  }
  zero(gw_, static_cast<std::size_t>(cfg_.max_seq) * c);
  enqueue("embedding bwd", [=, dwte = dwte_, dwpe = gw_, dres = dres_] {
    k::embedding_backward(dwte, dwpe, dres, inputs, B, T, C, V);
  });
  hand(kWpe, gw_);
  hand(kWte, dwte_);
}

template <class R>
void RefGpt<R>::argmax(std::int32_t* out, int rows) {
  ZORO_CHECK(rows > 0 && rows <= max_tokens_, "argmax over " << rows << " rows");
  const int V = cfg_.vocab;
  enqueue("argmax", [=, logits = logits_] {
    for (int r = 0; r < rows; ++r) {
      const R* row = logits + static_cast<std::size_t>(r) * V;
      out[r] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    }
  });
}

template class RefGpt<float>;
template class RefGpt<double>;

}  // namespace zoro::train

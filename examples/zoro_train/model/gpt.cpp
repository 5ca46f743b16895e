#include "examples/zoro_train/model/gpt.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "examples/zoro_train/model/gpt_compute.h"
#include "runtime/base/check.h"

namespace zoro::train {

Gpt::Gpt(GptConfig config, ParamStore& params, GptOptions options)
    : config_(config), params_(params), options_(options) {
  config_.validate();
  if (options_.seq_len == 0) options_.seq_len = config_.max_seq;
  ZORO_CHECK(options_.max_batch > 0,
             "model max_batch=" << options_.max_batch << " must be positive");
  ZORO_CHECK(
      options_.seq_len > 0 && options_.seq_len <= config_.max_seq,
      "model seq_len=" << options_.seq_len << " must be in [1, max_seq=" << config_.max_seq << "]");
  ZORO_CHECK(
      static_cast<std::int64_t>(options_.max_batch) * options_.seq_len * 4 * config_.channels <=
          std::int64_t{INT32_MAX},
      "model max_batch=" << options_.max_batch << " x seq_len=" << options_.seq_len
                         << " x 4*channels overflows int32");
  const auto expect = gpt_tensors(config_);
  const auto& have = params_.tensors();
  ZORO_CHECK(have.size() == expect.size(), "the parameter store holds "
                                               << have.size() << " tensors, the model "
                                               << config_.to_string() << " has " << expect.size());
  for (std::size_t t = 0; t < expect.size(); ++t) {
    ZORO_CHECK(have[t].name == expect[t].name && have[t].shape == expect[t].shape,
               "the parameter store's tensor " << t << " '" << have[t].name
                                               << "' does not match the model's '" << expect[t].name
                                               << "'");
  }
  if (params_.device().backend() == device::BackendKind::kHost) {
    compute_ = detail::make_host_compute(config_, params_, options_);
  } else {
    compute_ = detail::make_cuda_compute(config_, params_, options_);
  }
  const std::size_t tokens = static_cast<std::size_t>(options_.max_batch) * options_.seq_len;
  tokens_ = params_.device().allocate(device::MemoryKind::kDevice,
                                      static_cast<std::size_t>(config_.max_seq) * 4);
  predictions_ = params_.device().allocate(device::MemoryKind::kDevice, tokens * 4);
}

Gpt::~Gpt() {
  try {
    params_.compute_stream().synchronize();
  } catch (const std::exception& e) {
    ZORO_LOG(kError) << "Gpt shutdown: " << e.what();
  }
}

void Gpt::forward_backward(const DeviceBatch& batch, float dloss) {
  ZORO_CHECK(batch.targets != nullptr, "forward_backward() needs targets");
  compute_->forward(batch);
  last_rows_ = batch.B * batch.T;
  compute_->backward(batch, dloss);
  last_rows_ = 0;  // backward overwrote the logits
}

void Gpt::forward(const DeviceBatch& batch) {
  compute_->forward(batch);
  last_rows_ = batch.B * batch.T;
}

std::vector<double> Gpt::take_losses() { return compute_->take_losses(); }

std::vector<std::int32_t> Gpt::predictions() {
  ZORO_CHECK(last_rows_ > 0,
             "predictions() needs a forward() first (forward_backward "
             "overwrites the logits)");
  compute_->argmax(predictions_.as<std::int32_t>(), last_rows_);
  params_.compute_stream().synchronize();
  std::vector<std::int32_t> out(static_cast<std::size_t>(last_rows_));
  params_.device().copy(out.data(), predictions_.data(), out.size() * 4);
  return out;
}

std::vector<std::int32_t> Gpt::generate(std::span<const std::int32_t> prompt, int n,
                                        const SampleOptions& sample) {
  ZORO_CHECK(!prompt.empty(), "generate() needs a prompt of at least one token");
  ZORO_CHECK(n >= 0, "generate(): n=" << n << " must be >= 0");
  ZORO_CHECK(sample.greedy || (std::isfinite(sample.temperature) && sample.temperature > 0),
             "generate(): temperature=" << sample.temperature << " must be > 0");
  for (std::int32_t t : prompt) {
    ZORO_CHECK(t >= 0 && t < config_.vocab,
               "generate(): prompt token " << t << " outside [0, " << config_.vocab << ")");
  }
  const int window = std::min(config_.max_seq, options_.max_batch * options_.seq_len);
  std::vector<std::int32_t> tokens(prompt.begin(), prompt.end());
  std::vector<std::int32_t> out;
  std::mt19937_64 rng(sample.seed);
  for (int i = 0; i < n; ++i) {
    const int T = std::min<int>(window, static_cast<int>(tokens.size()));
    params_.compute_stream().synchronize();  // the previous forward has read tokens_
    params_.device().copy(tokens_.data(), tokens.data() + (tokens.size() - T), T * 4);
    forward({tokens_.as<std::int32_t>(), nullptr, 1, T});
    std::vector<float> logits = compute_->logits_row(T - 1);
    std::int32_t next = 0;
    if (sample.greedy) {
      next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                       logits.begin());
    } else {
      std::vector<int> order(logits.size());
      std::iota(order.begin(), order.end(), 0);
      std::size_t k = order.size();
      if (sample.top_k > 0 && static_cast<std::size_t>(sample.top_k) < k) {
        k = static_cast<std::size_t>(sample.top_k);
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k),
                          order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
      }
      double top = -INFINITY;
      for (std::size_t j = 0; j < k; ++j) top = std::max<double>(top, logits[order[j]]);
      std::vector<double> p(k);
      for (std::size_t j = 0; j < k; ++j)
        p[j] = std::exp((logits[order[j]] - top) / sample.temperature);
      std::discrete_distribution<std::size_t> pick(p.begin(), p.end());
      next = order[pick(rng)];
    }
    tokens.push_back(next);
    out.push_back(next);
  }
  last_rows_ = 0;
  return out;
}

std::size_t Gpt::activation_bytes() const {
  return compute_->device_bytes() + tokens_.bytes() + predictions_.bytes();
}

}  // namespace zoro::train

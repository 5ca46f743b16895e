// Training the model on the host backend: the offload engine (EngineParams) and the
// no-offload baseline (DeviceParams) give bit-identical runs with fp32 weights (gradient
// accumulation and clipping included) and agree within bf16 tolerance in bf16; DPU trains;
// a tiny model learns a pattern; save -> new objects -> resume continues the loss curve
// exactly; the model's device memory fits a capped device and a too-small cap is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "comm/communicator.h"
#include "model_test_util.h"
#include "runtime/base/error.h"
#include "runtime/device/trace.h"
#include "tests/support/random.h"

namespace zoro::train {
namespace {

using testing::Batches;
using testing::Rig;

// Runs `steps` optimizer steps of `accum` micro-batches each; returns the losses.
std::vector<double> run(Rig& rig, const Batches& batches, int steps, int accum, int first = 0) {
  std::vector<double> losses;
  for (int s = first; s < first + steps; ++s) {
    std::vector<DeviceBatch> micro;
    for (int k = 0; k < accum; ++k) micro.push_back(batches[s * accum + k]);
    const StepResult r = rig.trainer->step(micro);
    EXPECT_TRUE(r.report.boundary);
    EXPECT_EQ(r.step, s + 1);
    losses.push_back(r.loss);
  }
  return losses;
}

struct ParityCase {
  DType dtype;
  bool recompute;
};

class OffloadParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(OffloadParity, EngineAndDeviceStoresTrainAlike) {
  ZORO_TRACE_SEED();
  const auto [dtype, recompute] = GetParam();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(dtype);
  config.grad_accum_steps = 2;
  config.clip_norm = 0.5;  // the first steps' norms are larger: clipping is active
  const GptOptions options{.max_batch = 2, .seq_len = 8, .recompute = recompute};
  Rig offload(model, config, true, seed, options);
  Rig device(model, config, false, seed, options);
  const int steps = 4;
  Batches b1(*offload.device, model.vocab, 2, 8, steps * 2, seed + 1);
  Batches b2(*device.device, model.vocab, 2, 8, steps * 2, seed + 1);
  std::vector<double> norms[2];
  std::vector<double> la, lb;
  for (int s = 0; s < steps; ++s) {
    const DeviceBatch m1[] = {b1[2 * s], b1[2 * s + 1]};
    const DeviceBatch m2[] = {b2[2 * s], b2[2 * s + 1]};
    const StepResult ra = offload.trainer->step(m1);
    const StepResult rb = device.trainer->step(m2);
    la.push_back(ra.loss);
    lb.push_back(rb.loss);
    norms[0].push_back(ra.grad_norm);
    norms[1].push_back(rb.grad_norm);
    EXPECT_TRUE(ra.applied && rb.applied);
  }
  ASSERT_GT(norms[0][0], 0.5) << "clipping was not exercised";
  EXPECT_LT(la.back(), la.front()) << "the weights did not change";
  const auto& tensors = offload.params->tensors();
  if (dtype == DType::kF32) {
    EXPECT_EQ(la, lb);
    EXPECT_EQ(norms[0], norms[1]);
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      ASSERT_EQ(offload.params->master(t), device.params->master(t)) << tensors[t].name;
      ASSERT_EQ(offload.params->working(t), device.params->working(t)) << tensors[t].name;
    }
  } else {
    // bf16 working weights and gradients on the wire (engine) vs fp32 device gradients.
    for (int s = 0; s < steps; ++s) EXPECT_NEAR(la[s], lb[s], 2e-2 * std::abs(lb[s])) << s;
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      const auto a = offload.params->master(t);
      const auto b = device.params->master(t);
      double diff = 0, ref = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
        ref = std::max(ref, static_cast<double>(std::abs(b[i])));
      }
      // Adam steps are ~lr in size whatever the gradient: a differing rounding moves a weight
      // by at most a few lr over the run.
      EXPECT_LE(diff, 4 * steps * config.lr) << tensors[t].name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Host, OffloadParity,
                         ::testing::Values(ParityCase{DType::kF32, false},
                                           ParityCase{DType::kF32, true},
                                           ParityCase{DType::kBF16, false}),
                         [](const auto& param_info) {
                           return std::string(to_string(param_info.param.dtype)) +
                                  (param_info.param.recompute ? "_recompute" : "");
                         });

TEST(GptTraining, OneRankCommunicatorTrainsAsWithout) {
  ZORO_TRACE_SEED();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  const Config config = testing::store_config(DType::kF32);
  auto dev_a = device::open_device("host:mem=64MiB");
  auto dev_b = device::open_device("host:mem=64MiB");
  comm::SelfCommunicator self;
  EngineParams plain(config, *dev_a, gpt_tensors(model), gpt2_init(model, seed));
  EngineParams ranked(config, *dev_b, gpt_tensors(model), gpt2_init(model, seed), &self);
  Gpt ga(model, plain, {.max_batch = 2, .seq_len = 8});
  Gpt gb(model, ranked, {.max_batch = 2, .seq_len = 8});
  Trainer ta(ga), tb(gb);
  Batches ba(*dev_a, model.vocab, 2, 8, 3, seed + 2);
  Batches bb(*dev_b, model.vocab, 2, 8, 3, seed + 2);
  for (int s = 0; s < 3; ++s) {
    const DeviceBatch ma[] = {ba[s]};
    const DeviceBatch mb[] = {bb[s]};
    EXPECT_EQ(ta.step(ma).loss, tb.step(mb).loss) << s;
  }
  for (std::size_t t = 0; t < plain.tensors().size(); ++t) {
    ASSERT_EQ(plain.master(t), ranked.master(t)) << plain.tensors()[t].name;
  }
}

TEST(GptTraining, TinyModelLearnsAPatternAndGeneratesIt) {
  ZORO_TRACE_SEED();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(DType::kF32);
  config.lr = 3e-2;
  Rig rig(model, config, false, seed, {.max_batch = 4, .seq_len = 8});
  const int steps = 40;
  Batches batches(*rig.device, model.vocab, 4, 8, steps, seed + 7);
  const auto losses = run(rig, batches, steps, 1);
  EXPECT_GT(losses.front(), 2.0);  // ~ln(13) = 2.56 at the start
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  // Greedy generation continues the pattern x -> x + 3 (mod 13).
  const std::int32_t prompt[] = {1, 4, 7, 10};
  const auto next = rig.gpt->generate(prompt, 3, {.greedy = true});
  ASSERT_EQ(next.size(), 3u);
  EXPECT_EQ(next[0], 0);
  EXPECT_EQ(next[1], 3);
  // Predictions of an eval forward match the pattern on most positions.
  const double eval = rig.trainer->eval_loss(batches[0]);
  EXPECT_LT(eval, 0.5 * losses.front());
  const auto pred = rig.gpt->predictions();
  const std::int32_t* in = batches.host_inputs(0);
  int correct = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == (in[i] + 3) % model.vocab;
  EXPECT_GT(correct, static_cast<int>(pred.size()) * 3 / 4);
}

TEST(GptTraining, DelayedParameterUpdateTrains) {
  ZORO_TRACE_SEED();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(DType::kBF16);
  config.lr = 1e-2;  // one step stale: a smaller rate than the synchronous test's
  config.dpu = true;
  config.dpu_warmup_steps = 2;
  Rig rig(model, config, true, seed, {.max_batch = 4, .seq_len = 8});
  const int steps = 40;
  Batches batches(*rig.device, model.vocab, 4, 8, steps, seed + 9);
  int deferred = 0;
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const DeviceBatch micro[] = {batches[s]};
    const StepResult r = rig.trainer->step(micro);
    deferred += r.report.deferred;
    losses.push_back(r.loss);
  }
  EXPECT_EQ(deferred, steps - 2);
  auto mean = [&](int from) {
    double s = 0;
    for (int k = from; k < from + 5; ++k) s += losses[k];
    return s / 5;
  };
  EXPECT_LT(mean(steps - 5), 0.6 * mean(0));
  rig.trainer->flush();
}

// Forwards to an EngineParams; when the model hands wpe's gradient (every block's backward
// enqueued, the embedding's still to run), the compute stream waits until the trace shows a
// gradient bucket copied down: so the copies run while backward does, or the test fails
// (after a bounded wait) instead of hanging.
class WatchingStore final : public ParamStore {
 public:
  explicit WatchingStore(EngineParams& inner) : inner_(inner) {}
  const std::vector<TensorSpec>& tensors() const override { return inner_.tensors(); }
  const Config& config() const override { return inner_.config(); }
  device::Device& device() override { return inner_.device(); }
  device::Stream& compute_stream() override { return inner_.compute_stream(); }
  bool offloaded() const override { return true; }
  const void* param_data(std::size_t t) override { return inner_.param_data(t); }
  void begin_micro_step() override { inner_.begin_micro_step(); }
  void hand_grad(std::size_t t, const float* grad) override {
    inner_.hand_grad(t, grad);
    if (t != kWpe) return;
    device::Trace* trace = inner_.engine()->trace();
    inner_.compute_stream().launch_host_fn("wait for a d2h copy", [this, trace] {
      for (int i = 0; i < 2000 && !copied_during_backward_; ++i) {
        for (const auto& r : trace->snapshot()) {
          if (r.track == "d2h" && r.label.rfind("d2h bucket", 0) == 0) {
            copied_during_backward_ = true;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  StepReport end_micro_step() override { return inner_.end_micro_step(); }
  double loss_scale() const override { return inner_.loss_scale(); }
  void set_lr(double lr) override { inner_.set_lr(lr); }
  std::int64_t step() const override { return inner_.step(); }
  void flush() override { inner_.flush(); }
  std::vector<float> master(std::size_t t) override { return inner_.master(t); }
  std::vector<float> working(std::size_t t) override { return inner_.working(t); }
  void save(const std::string& dir) override { inner_.save(dir); }
  void load(const std::string& dir) override { inner_.load(dir); }
  bool copied_during_backward() {
    inner_.compute_stream().synchronize();
    return copied_during_backward_;
  }

 private:
  EngineParams& inner_;
  bool copied_during_backward_ = false;  // written on the compute stream's thread
};

TEST(GptTraining, GradientCopiesOverlapTheRestOfBackward) {
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(DType::kBF16);
  config.trace = true;
  auto device = device::open_device("host:mem=64MiB:trace");
  EngineParams engine(config, *device, gpt_tensors(model), gpt2_init(model, 5));
  WatchingStore store(engine);
  Gpt gpt(model, store, {.max_batch = 2, .seq_len = 8});
  Trainer trainer(gpt);
  Batches batches(*device, model.vocab, 2, 8, 1, 5);
  const DeviceBatch micro[] = {batches[0]};
  engine.engine()->trace()->clear();
  const StepResult r = trainer.step(micro);
  EXPECT_TRUE(r.applied);
  EXPECT_TRUE(store.copied_during_backward());
  EXPECT_GT(r.report.bytes_d2h, 0u);
}

TEST(GptTraining, Fp16LossScalingSkipsOverflowsAndTrains) {
  ZORO_TRACE_SEED();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(DType::kF16);
  config.grad_dtype = DType::kF16;
  config.loss_scale.init = 1 << 24;  // the fp16 gradients overflow until the scale backs off
  Rig rig(model, config, true, seed, {.max_batch = 4, .seq_len = 8});
  const int steps = 30;
  Batches batches(*rig.device, model.vocab, 4, 8, steps, seed + 11);
  int skipped = 0;
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const DeviceBatch micro[] = {batches[s]};
    const StepResult r = rig.trainer->step(micro);
    EXPECT_NE(r.applied, r.overflow);
    skipped += r.overflow;
    ASSERT_TRUE(std::isfinite(r.loss)) << s;  // the loss is reported unscaled
    losses.push_back(r.loss);
  }
  EXPECT_GT(skipped, 0);
  EXPECT_LT(rig.params->loss_scale(), config.loss_scale.init);
  EXPECT_LT(losses.back(), 0.6 * losses.front());
}

class Resume : public ::testing::TestWithParam<bool> {};

TEST_P(Resume, SaveLoadIntoNewObjectsContinuesTheLossCurveExactly) {
  ZORO_TRACE_SEED();
  const bool offload = GetParam();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model = testing::tiny_config();
  Config config = testing::store_config(DType::kBF16);
  config.grad_accum_steps = 2;
  const std::string dir = testing::scratch_dir(offload ? "offload" : "device");
  const int steps = 6;
  std::vector<double> straight;
  {
    Rig rig(model, config, offload, seed);
    Batches batches(*rig.device, model.vocab, 2, 8, steps * 2, seed + 3);
    straight = run(rig, batches, steps, 2);
  }
  std::vector<double> resumed;
  {
    Rig rig(model, config, offload, seed);
    Batches batches(*rig.device, model.vocab, 2, 8, steps * 2, seed + 3);
    resumed = run(rig, batches, steps / 2, 2);
    rig.trainer->save(dir);
  }
  {
    // Another initialisation: everything must come from the checkpoint.
    Rig rig(model, config, offload, seed + 1);
    Batches batches(*rig.device, model.vocab, 2, 8, steps * 2, seed + 3);
    rig.trainer->load(dir);
    EXPECT_EQ(rig.params->step(), steps / 2);
    const auto rest = run(rig, batches, steps - steps / 2, 2, steps / 2);
    resumed.insert(resumed.end(), rest.begin(), rest.end());
  }
  EXPECT_EQ(straight, resumed);
  // A checkpoint of another model is refused, naming the difference.
  GptConfig other = model;
  other.channels = 32;
  Rig wrong(other, config, offload, seed);
  EXPECT_THROW(wrong.trainer->load(dir), InvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Host, Resume, ::testing::Bool(), [](const auto& param_info) {
  return param_info.param ? "offload" : "no_offload";
});

TEST(GptMemory, FitsACappedDeviceAndATooSmallCapIsRefused) {
  const GptConfig model = testing::tiny_config();
  const Config config = testing::store_config(DType::kBF16);
  {
    Rig rig(model, config, true, 1, {.max_batch = 4, .seq_len = 8, .recompute = true});
    const auto stats = rig.device->memory_stats(device::MemoryKind::kDevice);
    EXPECT_GE(stats.used_bytes, rig.gpt->activation_bytes());
    EXPECT_LE(stats.peak_bytes, stats.capacity_bytes);
    Batches batches(*rig.device, model.vocab, 4, 8, 2, 5);
    run(rig, batches, 2, 1);
    EXPECT_LE(rig.device->memory_stats(device::MemoryKind::kDevice).peak_bytes,
              64 * std::size_t{1} << 20);
  }
  // A model whose activations cannot fit 1 MiB: OutOfMemory naming the numbers.
  GptConfig big{257, 64, 2, 4, 64};
  testing::expect_refused<OutOfMemory>(
      [&] { Rig rig(big, config, false, 1, {.max_batch = 8}, "host:mem=1MiB"); },
      {"cannot allocate", "MiB"});
  testing::expect_refused<OutOfMemory>(
      [&] { Rig rig(big, config, true, 1, {.max_batch = 8}, "host:mem=1MiB"); }, {"MiB"});
}

TEST(GptTraining, BadInputIsRefusedWithAClearMessage) {
  const GptConfig model = testing::tiny_config();
  const Config config = testing::store_config(DType::kF32);
  Rig rig(model, config, false, 1, {.max_batch = 2, .seq_len = 8});
  Batches batches(*rig.device, model.vocab, 2, 8, 2, 5);
  // The wrong number of micro-batches.
  const DeviceBatch two[] = {batches[0], batches[1]};
  testing::expect_refused<InvalidArgument>([&] { rig.trainer->step(two); },
                                           {"2 micro-batches", "grad_accum_steps is 1"});
  // A batch larger than the activations.
  DeviceBatch wide = batches[0];
  wide.B = 3;
  testing::expect_refused<InvalidArgument>([&] { rig.gpt->forward(wide); }, {"B=3", "T=8"});
  // A token id out of range: raised by the kernel on the stream, rethrown by the step.
  device::Buffer bad = rig.device->allocate(device::MemoryKind::kDevice, 2 * 16 * 4);
  std::vector<std::int32_t> ids(32, 1);
  ids[5] = model.vocab;
  rig.device->copy(bad.data(), ids.data(), ids.size() * 4);
  const DeviceBatch oob[] = {{bad.as<std::int32_t>(), bad.as<std::int32_t>() + 16, 2, 8}};
  EXPECT_THROW(rig.trainer->step(oob), Error);
  // The preset and shape checks.
  testing::expect_refused<InvalidArgument>([] { GptConfig::preset("gpt3"); },
                                           {"gpt3", "gpt2-medium", "default"});
  GptConfig odd = model;
  odd.heads = 3;
  testing::expect_refused<InvalidArgument>([&] { odd.validate(); }, {"channels=16", "heads=3"});
}

}  // namespace
}  // namespace zoro::train

// The offload engine on the host backend: parity with a plain in-memory optimizer fed the same
// gradients (bit for bit), accumulation, clipping, overflow, DPU staleness, checkpoints,
// memory bounds and overlap (by trace ordering, never clocks).
#include "runtime/engine.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <thread>

#include "offload/grad_fold.h"
#include "offload/optim/cpu_executor.h"
#include "offload/optim/cpu_optimizer.h"
#include "runtime/base/error.h"
#include "runtime/base/half.h"
#include "runtime/device/trace.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro {
namespace {

using device::MemoryKind;

struct Shape {
  std::string name;
  std::vector<std::int64_t> dims;
};

const std::vector<Shape> kModel = {
    {"embed", {37, 5}}, {"fc1.w", {5, 64}}, {"fc1.b", {64}}, {"fc2.w", {64, 9}}, {"fc2.b", {9}}};

std::size_t numel(const Shape& s) {
  std::size_t n = 1;
  for (auto d : s.dims) n *= static_cast<std::size_t>(d);
  return n;
}

Config base_config() {
  Config c;
  c.device = "host:mem=64MiB";
  c.dtype = DType::kF32;
  c.grad_dtype = DType::kF32;
  c.optimizer = OptimizerKind::kAdamW;
  c.lr = 1e-2;
  c.weight_decay = 0.05;
  c.clip_norm = 0;
  c.bucket_bytes = 4096;  // fp32: two buckets per micro-step
  c.bucket_count = 2;     // the ring wraps around within a step
  c.chunk_elems = 1024;   // several optimizer chunks
  c.cpu_threads = 2;
  return c;
}

// Rounds a gradient to what crosses the link (the wire dtype), as fp32.
float on_wire(DType wire, float g) {
  switch (wire) {
    case DType::kBF16:
      return bf16_to_float(float_to_bf16(g));
    case DType::kF16:
      return fp16_to_float(float_to_fp16(g));
    case DType::kF32:
      return g;
  }
  return g;
}

// Drives an Engine as a trainer does: per micro-step, "backward" writes every parameter's
// gradient into its slot with a copy on the compute stream, in reverse registration order.
class ToyTrainer {
 public:
  ToyTrainer(Engine& engine, std::vector<ParamId> ids) : engine_(engine), ids_(std::move(ids)) {
    std::size_t bytes = 0;
    for (ParamId p : ids_) bytes += engine_.layout().slot(p).numel * 4;
    src_ = engine_.device().allocate(MemoryKind::kPinnedHost, bytes);
  }

  // grads[i] for ids[i]; nullopt entries produce no gradient this micro-step.
  StepReport micro_step(const std::vector<std::vector<float>>& grads,
                        const std::function<void(std::size_t param_index)>& after_slot = {}) {
    engine_.begin_step();
    const DType wire = engine_.config().grad_dtype;
    const std::size_t gb = size_of(wire);
    auto* base = src_.as<std::byte>();
    std::size_t off = 0;
    for (std::size_t k = ids_.size(); k-- > 0;) {
      if (grads[k].empty()) continue;
      void* slot = engine_.grad_slot(ids_[k]);
      if (after_slot) after_slot(k);
      std::byte* src = base + off;
      for (std::size_t i = 0; i < grads[k].size(); ++i) {
        const float g = grads[k][i];
        if (wire == DType::kF32) {
          std::memcpy(src + 4 * i, &g, 4);
        } else {
          const std::uint16_t bits = wire == DType::kBF16 ? float_to_bf16(g) : float_to_fp16(g);
          std::memcpy(src + 2 * i, &bits, 2);
        }
      }
      engine_.compute_stream().copy_async(slot, src, grads[k].size() * gb);
      engine_.grads_ready({ids_[k]});
      off += grads[k].size() * 4;
    }
    StepReport r = engine_.end_step();
    engine_.compute_stream().synchronize();  // the pinned source is reused next micro-step
    return r;
  }

 private:
  Engine& engine_;
  std::vector<ParamId> ids_;
  device::Buffer src_;
};

// The reference: every parameter a plain vector, updated by the same CPU optimizer kernel
// with the gradient summed over micro-steps in fp32 (store, then add), the norm summed per
// parameter in double in element order, then over parameters in order.
class Reference {
 public:
  Reference(const Config& c, std::vector<std::vector<float>> init)
      : cfg_(c), w_(std::move(init)), exec_(optim::CpuExecutor::Options{1, -1, false}) {
    for (auto& w : w_) {
      m_.emplace_back(w.size(), 0.f);
      v_.emplace_back(w.size(), 0.f);
    }
  }

  // Returns whether the step was applied (false on overflow).
  bool step(const std::vector<std::vector<std::vector<float>>>& micro, double loss_scale = 1) {
    std::vector<std::vector<float>> acc(w_.size());
    for (std::size_t p = 0; p < w_.size(); ++p) {
      for (const auto& ms : micro) {
        if (ms[p].empty()) continue;
        if (acc[p].empty()) {
          for (float g : ms[p]) acc[p].push_back(on_wire(cfg_.grad_dtype, g));
        } else {
          for (std::size_t i = 0; i < ms[p].size(); ++i)
            acc[p][i] += on_wire(cfg_.grad_dtype, ms[p][i]);
        }
      }
      if (acc[p].empty()) acc[p].assign(w_[p].size(), 0.f);
    }
    double total = 0;
    bool finite = true;
    for (const auto& a : acc) {
      for (float g : a) finite &= std::isfinite(g);
      total += offload::sum_squares(a.data(), a.size());  // Note [Deterministic norm]
    }
    const double norm = std::sqrt(total) / loss_scale;
    if (!finite || !std::isfinite(norm)) return false;
    const double clip = cfg_.clip_norm > 0 ? std::min(1.0, cfg_.clip_norm / (norm + 1e-6)) : 1.0;
    ++t_;
    optim::AdamConfig ac;
    ac.lr = static_cast<float>(cfg_.lr);
    ac.beta1 = static_cast<float>(cfg_.beta1);
    ac.beta2 = static_cast<float>(cfg_.beta2);
    ac.eps = static_cast<float>(cfg_.eps);
    ac.weight_decay = static_cast<float>(cfg_.weight_decay);
    ac.decoupled_weight_decay = cfg_.optimizer == OptimizerKind::kAdamW;
    for (std::size_t p = 0; p < w_.size(); ++p) {
      const std::size_t n = w_[p].size();
      optim::AdamBuffers b{std::span<float>(w_[p]),
                           {m_[p].data(), n, DType::kF32},
                           {v_[p].data(), n, DType::kF32},
                           {acc[p].data(), n, DType::kF32},
                           {}};
      optim::adam_step(exec_, ac, {t_, static_cast<float>(clip / loss_scale)}, b);
    }
    return true;
  }

  const std::vector<float>& weights(std::size_t p) const { return w_[p]; }
  void set_lr(double lr) { cfg_.lr = lr; }

 private:
  Config cfg_;
  std::vector<std::vector<float>> w_, m_, v_;
  optim::CpuExecutor exec_;
  std::int64_t t_ = 0;
};

struct Fixture {
  std::vector<std::vector<float>> init;
  std::vector<ParamId> ids;
};

Fixture register_model(Engine& e, std::mt19937_64& rng) {
  Fixture f;
  for (const auto& s : kModel) {
    f.init.push_back(testing::random_floats(rng, numel(s), -0.5f, 0.5f));
    f.ids.push_back(e.add_parameter(s.name, s.dims, f.init.back()));
  }
  return f;
}

std::vector<std::vector<float>> random_grads(std::mt19937_64& rng, float scale = 1.f) {
  std::vector<std::vector<float>> g;
  for (const auto& s : kModel) g.push_back(testing::random_floats(rng, numel(s), -scale, scale));
  return g;
}

void expect_bitwise_equal(const std::vector<float>& a, const std::vector<float>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(a[i]), std::bit_cast<std::uint32_t>(b[i]))
        << what << " element " << i << ": " << a[i] << " vs " << b[i];
  }
}

// ---- parity ---------------------------------------------------------------------------------

struct ParityCase {
  std::string name;
  DType dtype;
  DType grad;
  int accum;
  double clip;
};

// Every case on every backend: the same engine code on the host backend and on CUDA (which
// skips visibly without a GPU).
class EngineParity : public ::testing::TestWithParam<std::tuple<ParityCase, std::string>> {};

TEST_P(EngineParity, MatchesPlainOptimizerBitForBit) {
  ZORO_TRACE_SEED();
  const ParityCase& pc = std::get<0>(GetParam());
  const std::string& spec = std::get<1>(GetParam());
  ZORO_SKIP_IF_UNAVAILABLE(spec);
  auto rng = testing::make_rng(100);
  Config c = base_config();
  c.device = spec;
  c.dtype = pc.dtype;
  c.grad_dtype = pc.grad;
  c.grad_accum_steps = pc.accum;
  c.clip_norm = pc.clip;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  Reference ref(c, f.init);
  ToyTrainer trainer(engine, f.ids);
  for (int step = 0; step < 6; ++step) {
    const double scale = engine.loss_scale();  // 65536 for fp16, 1 otherwise
    std::vector<std::vector<std::vector<float>>> micro;
    for (int m = 0; m < pc.accum; ++m) {
      micro.push_back(random_grads(rng));
      if (step == 2 && m == 0 && pc.accum > 1) micro.back()[1].clear();  // absent in one micro-step
      const StepReport r = trainer.micro_step(micro.back());
      EXPECT_EQ(r.boundary, m == pc.accum - 1);
    }
    ASSERT_TRUE(ref.step(micro, scale));
  }
  for (std::size_t p = 0; p < f.ids.size(); ++p) {
    expect_bitwise_equal(engine.master(f.ids[p]), ref.weights(p), "master " + kModel[p].name);
    // The working weights on the device are the master rounded to the working dtype.
    std::vector<float> rounded;
    for (float w : ref.weights(p)) rounded.push_back(on_wire(pc.dtype, w));
    expect_bitwise_equal(engine.working(f.ids[p]), rounded, "working " + kModel[p].name);
  }
  EXPECT_EQ(engine.step(), 6);
}

INSTANTIATE_TEST_SUITE_P(
    AllBackends, EngineParity,
    ::testing::Combine(
        ::testing::Values(ParityCase{"fp32", DType::kF32, DType::kF32, 1, 0},
                          ParityCase{"fp32_accum3_clip", DType::kF32, DType::kF32, 3, 0.5},
                          ParityCase{"bf16", DType::kBF16, DType::kBF16, 1, 0},
                          ParityCase{"bf16_accum2_clip", DType::kBF16, DType::kBF16, 2, 1.0},
                          ParityCase{"fp16_clip", DType::kF16, DType::kF16, 1, 0.7}),
        testing::all_backend_specs()),
    [](const auto& param_info) {
      return std::get<0>(param_info.param).name + "_" +
             testing::backend_spec_name(::testing::TestParamInfo<std::string>(
                 std::get<1>(param_info.param), param_info.index));
    });

// A schedule changes the learning rate between steps: each step uses the rate set before its
// end_step, exactly (bit for bit against the reference with the same rates).
TEST(Engine, SetLrAppliesToTheNextStep) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(150);
  Config c = base_config();
  c.dtype = DType::kF32;
  c.grad_dtype = DType::kF32;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  Reference ref(c, f.init);
  ToyTrainer trainer(engine, f.ids);
  EXPECT_EQ(engine.lr(), c.lr);
  for (int step = 0; step < 4; ++step) {
    const double lr = c.lr * (step + 1) * 0.7;
    engine.set_lr(lr);
    ref.set_lr(lr);
    auto g = random_grads(rng);
    trainer.micro_step(g);
    ASSERT_TRUE(ref.step({g}));
  }
  for (std::size_t p = 0; p < f.ids.size(); ++p) {
    expect_bitwise_equal(engine.master(f.ids[p]), ref.weights(p), "master " + kModel[p].name);
  }
  EXPECT_THROW(engine.set_lr(-1), InvalidArgument);
  EXPECT_THROW(engine.set_lr(std::numeric_limits<double>::quiet_NaN()), InvalidArgument);
}

TEST(Engine, OverflowSkipsTheStepAndHalvesTheScale) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(200);
  Config c = base_config();
  c.dtype = DType::kF16;
  c.grad_dtype = DType::kF16;
  c.loss_scale.init = 1024;
  c.loss_scale.growth_interval = 1000;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  Reference ref(c, f.init);
  ToyTrainer trainer(engine, f.ids);
  EXPECT_EQ(engine.loss_scale(), 1024);
  for (int step = 0; step < 4; ++step) {
    auto g = random_grads(rng);
    if (step == 1) g[2][3] = std::numeric_limits<float>::infinity();
    const double scale = engine.loss_scale();
    const StepReport r = trainer.micro_step(g);
    const bool applied = ref.step({g}, scale);
    EXPECT_EQ(r.applied, applied) << "step " << step;
    EXPECT_EQ(r.overflow, step == 1);
    EXPECT_EQ(r.loss_scale, step >= 1 ? 512 : 1024) << "step " << step;
  }
  for (std::size_t p = 0; p < f.ids.size(); ++p) {
    expect_bitwise_equal(engine.master(f.ids[p]), ref.weights(p), "master " + kModel[p].name);
  }
}

// fp16 with DPU (Note [Step loss scale]): update n runs while the trainer scales step n+1's
// loss, so an overflow in step n lowers the scale after the trainer has read it. Each step's
// gradient must still be unscaled by the scale the trainer used for it. The update of the
// overflowing step is held back until step n+1's backward is done, so the scale changes between
// the trainer's read and step n+1's update, every run.
TEST(Engine, DpuUnscalesEachStepByTheScaleTheTrainerUsed) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(250);
  Config c = base_config();
  c.dtype = DType::kF16;
  c.grad_dtype = DType::kF16;
  c.loss_scale.init = 1024;
  c.loss_scale.growth_interval = 1000;
  c.dpu = true;
  c.dpu_warmup_steps = 1;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  Reference ref(c, f.init);
  ToyTrainer trainer(engine, f.ids);
  constexpr int kOverflowStep = 2;  // the first DPU step
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  bool release_given = false;
  const auto give_release = [&] {
    if (!release_given) release.set_value();
    release_given = true;
  };
  engine.set_update_start_hook([released](std::int64_t step) {
    if (step == kOverflowStep) released.wait();
  });
  const std::vector<double> told_expected = {1024, 1024, 1024, 512, 512};
  for (int step = 1; step <= 5; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    auto g = random_grads(rng);
    if (step == kOverflowStep) g[2][3] = std::numeric_limits<float>::infinity();
    const double scale = engine.loss_scale();  // what this step's loss is scaled by
    EXPECT_EQ(scale, told_expected[static_cast<std::size_t>(step - 1)]);
    const StepReport r = trainer.micro_step(g, [&](std::size_t k) {
      EXPECT_EQ(engine.loss_scale(), scale) << "the scale changed within the step";
      // Step n+1's backward is done: update n may now run, and lower the scale.
      if (step == kOverflowStep + 1 && k == 0) give_release();
    });
    if (step < 5) {
      EXPECT_EQ(r.loss_scale, told_expected[static_cast<std::size_t>(step)]);  // the next step's
    }
    ref.step({g}, scale);
    // DPU reports the update one step behind: step 3 reports step 2's overflow.
    EXPECT_EQ(r.overflow, step == kOverflowStep + 1);
  }
  give_release();
  engine.flush();
  for (std::size_t p = 0; p < f.ids.size(); ++p) {
    expect_bitwise_equal(engine.master(f.ids[p]), ref.weights(p), "master " + kModel[p].name);
  }
  EXPECT_EQ(engine.loss_scale(), 512);
}

// ---- DPU ------------------------------------------------------------------------------------

TEST(Engine, DpuComputesStepNPlusOneWithStepNMinusOnesWeights) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(300);
  const int kSteps = 7;
  const int kWarmup = 2;
  std::vector<std::vector<std::vector<float>>> grads;
  for (int s = 0; s < kSteps; ++s) grads.push_back(random_grads(rng));

  // The synchronous run: the weights after each update (W[0] = initial).
  auto init_rng = testing::make_rng(301);
  Config sync_cfg = base_config();
  std::vector<std::vector<float>> w_after;  // parameter 1 only
  {
    Engine engine(sync_cfg);
    Fixture f = register_model(engine, init_rng);
    engine.finalize();
    ToyTrainer trainer(engine, f.ids);
    w_after.push_back(engine.master(f.ids[1]));
    for (int s = 0; s < kSteps; ++s) {
      trainer.micro_step(grads[static_cast<std::size_t>(s)]);
      w_after.push_back(engine.master(f.ids[1]));
    }
  }
  Config dpu_cfg = sync_cfg;
  dpu_cfg.dpu = true;
  dpu_cfg.dpu_warmup_steps = kWarmup;
  init_rng = testing::make_rng(301);
  Engine engine(dpu_cfg);
  Fixture f = register_model(engine, init_rng);
  engine.finalize();
  ToyTrainer trainer(engine, f.ids);
  const std::size_t n = engine.layout().slot(f.ids[1]).numel;
  auto snapshot = engine.device().allocate(MemoryKind::kPinnedHost, n * 4);
  for (int s = 1; s <= kSteps; ++s) {
    // What step s computes with: the working weights at the start of its forward, read in
    // stream order on the compute stream.
    trainer.micro_step(grads[static_cast<std::size_t>(s - 1)], [&](std::size_t k) {
      if (k != f.ids.size() - 1) return;
      engine.compute_stream().copy_async(snapshot.data(), engine.param_data(f.ids[1]), n * 4);
    });
    std::vector<float> used(snapshot.as<float>(), snapshot.as<float>() + n);
    const int expected_update = s <= kWarmup + 1 ? s - 1 : s - 2;
    expect_bitwise_equal(used, w_after[static_cast<std::size_t>(expected_update)],
                         "weights used at step " + std::to_string(s));
  }
  // After a flush the DPU run has applied the same updates as the synchronous one.
  expect_bitwise_equal(engine.master(f.ids[1]), w_after.back(), "final master");
  expect_bitwise_equal(engine.working(f.ids[1]), w_after.back(), "final working");
}

// ---- checkpoints ----------------------------------------------------------------------------

std::string scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("zoro-engine-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

class EngineResume : public ::testing::TestWithParam<bool> {};

TEST_P(EngineResume, SaveKillResumeContinuesExactly) {
  ZORO_TRACE_SEED();
  const bool dpu = GetParam();
  auto rng = testing::make_rng(400);
  std::vector<std::vector<std::vector<float>>> grads;
  for (int s = 0; s < 8; ++s) grads.push_back(random_grads(rng));
  Config c = base_config();
  c.dtype = DType::kBF16;
  c.grad_dtype = DType::kBF16;
  c.dpu = dpu;
  c.dpu_warmup_steps = 1;
  c.clip_norm = 1.0;
  const std::string dir = scratch(dpu ? "dpu" : "sync");

  std::vector<std::vector<float>> uninterrupted, used_uninterrupted;
  {
    auto init_rng = testing::make_rng(401);
    Engine engine(c);
    Fixture f = register_model(engine, init_rng);
    engine.finalize();
    ToyTrainer trainer(engine, f.ids);
    for (int s = 0; s < 8; ++s) {
      trainer.micro_step(grads[static_cast<std::size_t>(s)]);
      if (s == 3) engine.save_checkpoint(dir);
      if (s >= 4) used_uninterrupted.push_back(engine.working(f.ids[3]));
    }
    for (ParamId p : f.ids) uninterrupted.push_back(engine.master(p));
  }
  // A new process would start here: a fresh engine with other initial values.
  auto other_rng = testing::make_rng(999);
  Engine engine(c);
  Fixture f = register_model(engine, other_rng);
  engine.finalize();
  engine.load_checkpoint(dir);
  EXPECT_EQ(engine.step(), 4);
  ToyTrainer trainer(engine, f.ids);
  for (int s = 4; s < 8; ++s) {
    trainer.micro_step(grads[static_cast<std::size_t>(s)]);
    expect_bitwise_equal(engine.working(f.ids[3]),
                         used_uninterrupted[static_cast<std::size_t>(s - 4)],
                         "working after step " + std::to_string(s));
  }
  for (std::size_t p = 0; p < f.ids.size(); ++p) {
    expect_bitwise_equal(engine.master(f.ids[p]), uninterrupted[p], "master " + kModel[p].name);
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Host, EngineResume, ::testing::Bool(),
                         [](const auto& param_info) { return param_info.param ? "dpu" : "sync"; });

template <class E>
void expect_refused(const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "accepted; expected an error mentioning '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Engine, BadCheckpointsAreRefusedAndLeaveTheStateIntact) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(500);
  Config c = base_config();
  const std::string dir = scratch("bad");
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  ToyTrainer trainer(engine, f.ids);
  trainer.micro_step(random_grads(rng));
  engine.save_checkpoint(dir);
  const std::string file = dir + "/zoro.ckpt";
  const auto before = engine.master(f.ids[0]);

  // Corrupted: one byte flipped near the end (inside a section).
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& contents) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << contents;
  };
  std::string corrupted = bytes;
  corrupted[corrupted.size() - 20] ^= 0x40;
  write(corrupted);
  expect_refused<IoError>([&] { engine.load_checkpoint(dir); }, "fails its checksum");
  write(bytes.substr(0, bytes.size() / 2));
  expect_refused<IoError>([&] { engine.load_checkpoint(dir); }, "truncated");
  write("not a checkpoint at all");
  expect_refused<IoError>([&] { engine.load_checkpoint(dir); }, "not a zoro checkpoint");
  expect_refused<IoError>([&] { engine.load_checkpoint(dir + "/missing"); }, "cannot open");
  expect_bitwise_equal(engine.master(f.ids[0]), before, "state after refused loads");

  // Another model: one shape differs.
  write(bytes);
  Engine other(c);
  auto rng2 = testing::make_rng(501);
  for (const auto& s : kModel) {
    auto dims = s.dims;
    if (s.name == "fc2.b") dims = {10};
    other.add_parameter(s.name, dims, testing::random_floats(rng2, numel({s.name, dims})));
  }
  other.finalize();
  expect_refused<InvalidArgument>([&] { other.load_checkpoint(dir); }, "'fc2.b' [9]");
  // Another optimizer configuration.
  Config c2 = c;
  c2.lr = 0.5;
  Engine third(c2);
  auto rng3 = testing::make_rng(502);
  register_model(third, rng3);
  third.finalize();
  expect_refused<InvalidArgument>([&] { third.load_checkpoint(dir); }, "optimizer.lr");
  std::filesystem::remove_all(dir);
}

// ---- per-step timing ------------------------------------------------------------------------

class EngineTiming : public ::testing::TestWithParam<bool> {};

TEST_P(EngineTiming, ReportsDeviceMeasuredCopiesOfCompletedSteps) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(650);
  Config c = base_config();
  c.dtype = DType::kBF16;
  c.grad_dtype = DType::kBF16;
  c.grad_accum_steps = 2;
  c.dpu = GetParam();
  c.dpu_warmup_steps = 1;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  ToyTrainer trainer(engine, f.ids);
  std::size_t grad_bytes = 0;
  for (ParamId p : f.ids) grad_bytes += engine.layout().slot(p).numel * 2;
  const std::size_t weight_bytes = engine.layout().total_elems() * 2;
  std::int64_t last_seen = 0;
  for (int step = 0; step < 5; ++step) {
    for (int m = 0; m < 2; ++m) {
      const StepReport r = trainer.micro_step(random_grads(rng));
      if (!r.timing) continue;
      const StepTiming& t = *r.timing;
      EXPECT_GE(t.step, last_seen) << "timings go backwards";
      EXPECT_LE(t.step, r.step);
      last_seen = t.step;
      // Both micro-steps' gradients; slots start on 256-byte boundaries inside a bucket, and a
      // bucket crosses the link whole, gaps included.
      EXPECT_GE(t.bytes_d2h, 2 * grad_bytes) << "step " << t.step;
      EXPECT_LE(t.bytes_d2h, 2 * (grad_bytes + 256 * f.ids.size())) << "step " << t.step;
      EXPECT_EQ(t.bytes_h2d, weight_bytes) << "every chunk once, step " << t.step;
      EXPECT_GE(t.d2h_ms, 0);
      EXPECT_GE(t.h2d_ms, 0);
      EXPECT_GE(t.exposed_ms, 0);
      EXPECT_GT(t.update_ms, 0);
    }
  }
  EXPECT_GE(last_seen, 2) << "no step's timing was reported";
}

INSTANTIATE_TEST_SUITE_P(Host, EngineTiming, ::testing::Bool(),
                         [](const auto& param_info) { return param_info.param ? "dpu" : "sync"; });

// ---- memory plan and bounds -----------------------------------------------------------------

TEST(Engine, DeviceMemoryStaysWithinThePlan) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(600);
  Config c = base_config();
  c.dtype = DType::kBF16;
  c.grad_dtype = DType::kBF16;
  auto dev = device::open_device("host:mem=1MiB");
  {
    Engine engine(c, *dev);
    Fixture f = register_model(engine, rng);
    engine.finalize();
    ToyTrainer trainer(engine, f.ids);  // (its gradient source is pinned, not device memory)
    for (int s = 0; s < 3; ++s) trainer.micro_step(random_grads(rng));
    engine.flush();
    EXPECT_LE(dev->memory_stats(MemoryKind::kDevice).peak_bytes,
              engine.plan().total(offload::Place::kDevice));
    EXPECT_GT(dev->memory_stats(MemoryKind::kDevice).peak_bytes, 0u);
  }
  // A plan larger than the device is refused before allocating, with the numbers.
  auto tiny = device::open_device("host:mem=4KiB");
  Engine engine(c, *tiny);
  register_model(engine, rng);
  expect_refused<OutOfMemory>([&] { engine.finalize(); }, "does not fit the device");
  EXPECT_EQ(tiny->memory_stats(MemoryKind::kDevice).peak_bytes, 0u);
  Config budget = c;
  budget.host_budget_bytes = 1000;
  Engine engine2(budget, *dev);
  register_model(engine2, rng);
  expect_refused<OutOfMemory>([&] { engine2.finalize(); }, "host budget");
}

TEST(Engine, MisuseIsRefusedWithAClearMessage) {
  auto rng = testing::make_rng(700);
  Config c = base_config();
  Engine engine(c);
  expect_refused<InvalidArgument>([&] { engine.finalize(); }, "no parameters");
  Fixture f = register_model(engine, rng);
  expect_refused<InvalidArgument>([&] { engine.add_parameter("x", {3}, std::vector<float>(4)); },
                                  "3 elements but 4");
  expect_refused<InvalidArgument>([&] { engine.begin_step(); }, "not finalized");
  Config big = c;
  big.bucket_bytes = 4096;
  Engine small_bucket(big);
  small_bucket.add_parameter("huge", {4096}, std::vector<float>(4096));
  expect_refused<InvalidArgument>([&] { small_bucket.finalize(); }, "'huge' needs");
  engine.finalize();
  expect_refused<InvalidArgument>([&] { engine.grad_slot(f.ids[0]); }, "outside begin_step");
  engine.begin_step();
  expect_refused<InvalidArgument>([&] { engine.begin_step(); }, "twice");
  engine.grad_slot(f.ids[0]);
  expect_refused<InvalidArgument>([&] { engine.grad_slot(f.ids[0]); }, "twice in one micro-step");
  expect_refused<InvalidArgument>([&] { engine.grads_ready({f.ids[1]}); }, "without a grad_slot");
  expect_refused<InvalidArgument>([&] { engine.end_step(); }, "grads_ready() was never called");
}

// ---- overlap, by trace ordering -------------------------------------------------------------

// Waits (bounded, so that a serialising engine fails instead of hanging) until the trace
// holds a record on `track` whose label starts with `prefix`.
bool wait_for_record(device::Trace& trace, const std::string& track, const std::string& prefix) {
  for (int i = 0; i < 30000; ++i) {
    for (const auto& r : trace.snapshot()) {
      if (r.track == track && r.label.rfind(prefix, 0) == 0) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

TEST(Engine, GradientCopiesOverlapTheRestOfBackward) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(800);
  Config c = base_config();
  c.device = "host:mem=64MiB:trace";
  c.trace = true;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  ToyTrainer trainer(engine, f.ids);
  device::Trace& trace = *engine.trace();
  trace.clear();
  // "Backward" of the first parameter (the last one computed, in the second bucket) runs as
  // a compute-stream task that cannot finish before the copy of the first bucket has
  // completed on the D2H stream: an engine that copied gradients only after backward, or
  // that blocked the compute stream on the copy, fails here.
  bool copied_during_backward = false;
  trainer.micro_step(random_grads(rng), [&](std::size_t k) {
    if (k != 0) return;
    engine.compute_stream().launch_host_fn("backward tail", [&] {
      copied_during_backward = wait_for_record(trace, "d2h", "d2h bucket");
    });
  });
  engine.flush();
  ASSERT_TRUE(copied_during_backward) << "no gradient copy ran while backward was computing";
  const auto records = trace.snapshot();
  const auto& tail = device::find_record(records, "compute", "backward tail");
  const auto& first_copy = device::find_record(records, "d2h", "d2h bucket 0");
  EXPECT_LT(first_copy.seq_end, tail.seq_end) << "the first bucket's copy ended after backward";
  // The optimizer ran in several chunks and each chunk's weights went up on the H2D stream.
  int chunks = 0, uploads = 0;
  for (const auto& r : records) {
    chunks += r.track == "cpu-update" && r.label.rfind("update chunk", 0) == 0;
    uploads += r.track == "h2d" && r.label.rfind("h2d chunk", 0) == 0;
  }
  EXPECT_GT(chunks, 1);
  EXPECT_EQ(uploads, chunks);
  // The copy of chunk k up to the device overlaps the update of chunk k+1: after chunk 0's
  // copy is enqueued, the update waits until the H2D stream has finished that copy before it
  // computes chunk 1. An engine that copied only after the whole update would never get there.
  trace.clear();
  bool chunk0_copied_before_chunk1 = false;
  engine.set_after_chunk_upload_hook([&](std::size_t k) {
    if (k == 0) chunk0_copied_before_chunk1 = wait_for_record(trace, "h2d", "h2d chunk 0");
  });
  trainer.micro_step(random_grads(rng));
  engine.flush();
  engine.set_after_chunk_upload_hook({});
  EXPECT_TRUE(chunk0_copied_before_chunk1) << "chunk 0's copy did not run during the update";
  const auto step2 = trace.snapshot();
  EXPECT_LT(device::find_record(step2, "h2d", "h2d chunk 0").seq_end,
            device::find_record(step2, "cpu-update", "update chunk 1").seq_end);
  const std::string path = scratch("trace") + ".json";
  engine.write_trace(path);
  EXPECT_GT(std::filesystem::file_size(path), 100u);
  std::filesystem::remove(path);
}

TEST(Engine, DpuUploadsHideBehindTheRestOfBackward) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(900);
  Config c = base_config();
  c.device = "host:mem=64MiB:trace";
  c.trace = true;
  c.dpu = true;
  c.dpu_warmup_steps = 1;
  Engine engine(c);
  Fixture f = register_model(engine, rng);
  engine.finalize();
  ToyTrainer trainer(engine, f.ids);
  trainer.micro_step(random_grads(rng));  // synchronous (warm-up)
  trainer.micro_step(random_grads(rng));  // launches its update in the background
  device::Trace& trace = *engine.trace();
  trace.clear();
  // Step 3: once every parameter but the first has been released, the last chunk of step 2's
  // update (all of whose parameters are released) must go up while backward is still busy:
  // the compute task below cannot finish until that copy has completed on the H2D stream.
  bool uploaded_during_backward = false;
  trainer.micro_step(random_grads(rng), [&](std::size_t k) {
    if (k != 0) return;
    engine.compute_stream().launch_host_fn("backward tail", [&] {
      uploaded_during_backward = wait_for_record(trace, "h2d", "h2d chunk 1 (dpu)");
    });
  });
  engine.flush();
  EXPECT_TRUE(uploaded_during_backward) << "no DPU upload ran while backward was computing";
  const auto records = trace.snapshot();
  EXPECT_LT(device::find_record(records, "h2d", "h2d chunk 1 (dpu)").seq_end,
            device::find_record(records, "compute", "backward tail").seq_end);
}

}  // namespace
}  // namespace zoro

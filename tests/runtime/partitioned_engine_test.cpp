// The partitioned (ZeRO-2) engine under mpirun -np 2, 3 and 4 (tests/runtime/CMakeLists.txt),
// on the host backend with the MPI communicator.
//
// Every rank derives every rank's gradients from one seed (rank 0's test seed, broadcast),
// so each rank also runs, in its own process, the reference: a single-rank engine fed the mean
// of the N ranks' gradients, which is what the partitioned engine must compute (it averages
// over ranks, as DDP does). Each rank's gradient is a common random base plus a random
// per-rank offset, the offsets summing to zero, all small multiples of 2^-10 (fp32) or 2^-6
// (bf16): so every rank sum is exact in any reduction order and on the 16-bit wire, the mean
// is exact too, and a rank's contribution that went missing or landed elsewhere still changes
// the result. The two runs then differ only by the engine's scaling of the sum by 1/N inside
// the update (fp32 rounding), never by a cancellation: with random fp32 values a gradient
// summing to almost nothing could flip the sign of Adam's step on reduction order alone.
// Working weights must be identical on every rank, bit for bit.
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string_view>

#include "comm/mpi/mpi_communicator.h"
#include "runtime/base/error.h"
#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "tests/runtime/grad_feeder.h"
#include "tests/support/random.h"

namespace zoro {
namespace {

using offload::Place;

struct Shape {
  std::string name;
  std::vector<std::int64_t> dims;
};

// 35 alignment units of 64 elements: uneven shards for 2, 3 and 4 ranks, parameters that
// straddle shard boundaries, and several buckets per micro-step.
const std::vector<Shape> kModel = {{"embed", {37, 5}}, {"fc1.w", {5, 64}}, {"fc1.b", {64}},
                                   {"fc2.w", {64, 9}}, {"fc2.b", {9}},     {"fc3.w", {24, 41}}};

std::size_t numel(const Shape& s) {
  std::size_t n = 1;
  for (auto d : s.dims) n *= static_cast<std::size_t>(d);
  return n;
}

std::uint64_t shared_seed() {
  std::uint64_t seed = ::zoro::testing::test_seed();
  EXPECT_EQ(MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), MPI_SUCCESS);
  return seed;
}

void barrier() { ASSERT_EQ(MPI_Barrier(MPI_COMM_WORLD), MPI_SUCCESS); }

class Ranks {
 public:
  Ranks() : comm_(comm::MpiEnvironment::acquire()) {}
  comm::Communicator& comm() { return comm_; }
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }

 private:
  comm::MpiCommunicator comm_;
};

Config base_config() {
  Config c;
  c.device = "host:mem=64MiB";
  c.dtype = DType::kF32;
  c.grad_dtype = DType::kF32;
  c.optimizer = OptimizerKind::kAdamW;
  c.lr = 1e-2;
  c.weight_decay = 0.05;
  c.clip_norm = 0;
  c.bucket_bytes = 4096;  // fp32: a few buckets per micro-step
  c.bucket_count = 2;     // the ring wraps around within a step
  c.chunk_elems = 1024;   // the smallest allowed: two chunks in a shard of 2 ranks
  c.cpu_threads = 1;      // up to 4 ranks share 2 cores
  return c;
}

struct Case {
  std::string name;
  Config cfg;
};
// gtest prints a parameter on failure: its name, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"fp32", base_config()});
  Config accum = base_config();
  accum.grad_accum_steps = 3;
  accum.clip_norm = 0.5;  // the random gradients' mean norm is larger: clipping is active
  out.push_back({"fp32_accum3_clip", accum});
  Config bf16 = base_config();
  bf16.dtype = DType::kBF16;
  bf16.grad_dtype = DType::kBF16;
  bf16.grad_accum_steps = 2;
  bf16.clip_norm = 1.0;
  out.push_back({"bf16_accum2_clip", bf16});
  Config dpu = base_config();
  dpu.dpu = true;
  dpu.dpu_warmup_steps = 1;
  dpu.grad_accum_steps = 2;
  out.push_back({"fp32_dpu_accum2", dpu});
  return out;
}

// The gradients of every rank for one micro-step: grads[rank][param].
using RankGrads = std::vector<std::vector<std::vector<float>>>;

RankGrads draw_grads(std::mt19937_64& rng, int world, DType wire) {
  const bool fp32 = wire == DType::kF32;
  const float unit = fp32 ? 1.f / 1024 : 1.f / 64;
  std::uniform_int_distribution<int> base(fp32 ? -1024 : -32, fp32 ? 1024 : 32);
  std::uniform_int_distribution<int> offset(fp32 ? -256 : -8, fp32 ? 256 : 8);
  RankGrads g(static_cast<std::size_t>(world));
  for (const auto& s : kModel) {
    const std::size_t n = numel(s);
    for (auto& rank : g) rank.emplace_back(n);
    for (std::size_t i = 0; i < n; ++i) {
      const int k = base(rng);
      int rest = 0;
      for (int r = 0; r + 1 < world; ++r) {
        const int j = offset(rng);
        rest += j;
        g[static_cast<std::size_t>(r)].back()[i] = static_cast<float>(k + j) * unit;
      }
      g.back().back()[i] = static_cast<float>(k - rest) * unit;
    }
  }
  return g;
}

// The mean over ranks, summed in rank order in fp32.
std::vector<std::vector<float>> mean_of(const RankGrads& g) {
  std::vector<std::vector<float>> mean = g[0];
  for (std::size_t r = 1; r < g.size(); ++r) {
    for (std::size_t p = 0; p < mean.size(); ++p) {
      for (std::size_t i = 0; i < mean[p].size(); ++i) mean[p][i] += g[r][p][i];
    }
  }
  const auto n = static_cast<float>(g.size());
  for (auto& p : mean) {
    for (float& v : p) v /= n;
  }
  return mean;
}

std::vector<std::vector<float>> initial_values(std::mt19937_64& rng) {
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) init.push_back(testing::random_floats(rng, numel(s), -0.5f, 0.5f));
  return init;
}

std::vector<ParamId> add_model(Engine& e, const std::vector<std::vector<float>>& init) {
  std::vector<ParamId> ids;
  for (std::size_t k = 0; k < kModel.size(); ++k) {
    ids.push_back(e.add_parameter(kModel[k].name, kModel[k].dims, init[k]));
  }
  return ids;
}

// FNV-1a of the working weights of every parameter (the device copy, as fp32 bits).
std::uint64_t working_digest(Engine& e, const std::vector<ParamId>& ids) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (ParamId p : ids) {
    const std::vector<float> w = e.working(p);
    const auto* b = reinterpret_cast<const unsigned char*>(w.data());
    for (std::size_t i = 0; i < w.size() * 4; ++i) {
      h ^= b[i];
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

// Every rank's digest is rank 0's.
void expect_same_on_every_rank(std::uint64_t digest, const char* what) {
  std::uint64_t lo = 0, hi = 0;
  ASSERT_EQ(MPI_Allreduce(&digest, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD), MPI_SUCCESS);
  ASSERT_EQ(MPI_Allreduce(&digest, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD), MPI_SUCCESS);
  EXPECT_EQ(lo, hi) << what << " differ between ranks";
}

// A directory every rank names alike (from the shared seed); rank 0 removes it at the end.
class SharedDir {
 public:
  SharedDir(const char* tag, std::uint64_t seed, int world) {
    path_ = (std::filesystem::temp_directory_path() /
             ("zoro-part-" + std::string(tag) + "-" + std::to_string(seed) + "-np" +
              std::to_string(world)))
                .string();
  }
  ~SharedDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::error_code ec;
    if (rank == 0) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The names in a directory.
std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// What a checkpoint directory holds after a successful save: its manifest and the files it
// names, nothing else.
std::set<std::string> committed(const CheckpointManifest& manifest) {
  std::set<std::string> names(manifest.files.begin(), manifest.files.end());
  names.insert(kManifestFile);
  return names;
}

// ---- parity with one rank fed the mean ----------------------------------------------------

class PartitionedParity : public ::testing::TestWithParam<Case> {};

TEST_P(PartitionedParity, MatchesOneRankFedTheMeanStepByStep) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  const Config cfg = GetParam().cfg;
  std::mt19937_64 rng(shared_seed() ^ 0x9e3779b97f4a7c15ull);
  const auto init = initial_values(rng);

  auto dev = device::open_device(cfg.device);
  Engine engine(cfg, *dev, ranks.comm());
  const auto ids = add_model(engine, init);
  engine.finalize();
  auto ref_dev = device::open_device(cfg.device);
  Engine reference(cfg, *ref_dev);
  const auto ref_ids = add_model(reference, init);
  reference.finalize();
  ASSERT_EQ(engine.world_size(), ranks.size());
  ASSERT_EQ(engine.shard().begin, engine.layout().shard(ranks.rank(), ranks.size()).begin);

  testing::GradFeeder feed(engine, ids), ref_feed(reference, ref_ids);
  for (int step = 1; step <= 4; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step << ", rank " << ranks.rank());
    StepReport got, want;
    for (int micro = 0; micro < cfg.grad_accum_steps; ++micro) {
      const RankGrads g = draw_grads(rng, ranks.size(), cfg.grad_dtype);
      got = feed.micro_step(g[static_cast<std::size_t>(ranks.rank())]);
      want = ref_feed.micro_step(mean_of(g));
    }
    ASSERT_TRUE(got.boundary);
    EXPECT_EQ(got.applied, want.applied);
    EXPECT_EQ(got.overflow, want.overflow);
    EXPECT_EQ(got.deferred, want.deferred);
    EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-6 * want.grad_norm);
    EXPECT_NEAR(got.clip_factor, want.clip_factor, 1e-6);
    if (cfg.clip_norm > 0 && step == 1) {
      EXPECT_LT(want.clip_factor, 1.0) << "clipping never on";
    }
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const std::vector<float> m = engine.master(ids[k]);  // collective
      const std::vector<float> r = reference.master(ref_ids[k]);
      ASSERT_EQ(m.size(), r.size());
      for (std::size_t i = 0; i < m.size(); ++i) {
        ASSERT_NEAR(m[i], r[i], 1e-6) << kModel[k].name << "[" << i << "]";
      }
      const std::vector<float> v = engine.moment(ids[k], 1);  // collective
      const std::vector<float> rv = reference.moment(ref_ids[k], 1);
      for (std::size_t i = 0; i < v.size(); ++i) {
        ASSERT_NEAR(v[i], rv[i], 1e-5 * rv[i]) << kModel[k].name << "[" << i << "]";
      }
    }
    expect_same_on_every_rank(working_digest(engine, ids), "working weights");
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, PartitionedParity, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return p.param.name; });

TEST(PartitionedEngine, OverflowOnOneRankSkipsTheStepOnAll) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  Config cfg = base_config();
  cfg.clip_norm = 1.0;
  std::mt19937_64 rng(shared_seed() ^ 0x51ed27);
  const auto init = initial_values(rng);
  auto dev = device::open_device(cfg.device);
  Engine engine(cfg, *dev, ranks.comm());
  const auto ids = add_model(engine, init);
  engine.finalize();
  auto ref_dev = device::open_device(cfg.device);
  Engine reference(cfg, *ref_dev);
  const auto ref_ids = add_model(reference, init);
  reference.finalize();
  testing::GradFeeder feed(engine, ids), ref_feed(reference, ref_ids);
  const int bad_rank = ranks.size() - 1;  // an Inf in a parameter another rank owns
  for (int step = 1; step <= 3; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step << ", rank " << ranks.rank());
    RankGrads g = draw_grads(rng, ranks.size(), cfg.grad_dtype);
    if (step == 2) g[static_cast<std::size_t>(bad_rank)][0][3] = INFINITY;
    std::vector<float> before;
    if (step == 2) before = engine.master(ids[0]);
    const StepReport got = feed.micro_step(g[static_cast<std::size_t>(ranks.rank())]);
    const StepReport want = ref_feed.micro_step(mean_of(g));
    EXPECT_EQ(got.overflow, step == 2);
    EXPECT_EQ(got.applied, step != 2);
    EXPECT_EQ(want.overflow, got.overflow);
    if (step == 2) {
      EXPECT_EQ(engine.master(ids[0]), before) << "a skipped step changed weights";
    }
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const std::vector<float> m = engine.master(ids[k]);
      const std::vector<float> r = reference.master(ref_ids[k]);
      for (std::size_t i = 0; i < m.size(); ++i) ASSERT_NEAR(m[i], r[i], 1e-6) << kModel[k].name;
    }
    // Every rank took the same decision.
    int skipped = got.applied ? 0 : 1, lo = 0, hi = 0;
    MPI_Allreduce(&skipped, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&skipped, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_EQ(lo, hi);
  }
  expect_same_on_every_rank(working_digest(engine, ids), "working weights");
}

// ---- scalars every rank agrees on (Engine::all_reduce_scalars) ----------------------------

// Rank r's values after step s: rank-dependent and not exactly representable, so a sum in
// another order than rank order would differ in the last bits.
std::vector<double> scalars_of(int rank, int step) {
  return {0.1 * (rank + 1) + step / 3.0, -1.7 * rank + 1e-3 * step, std::ldexp(1.0 / 7, rank),
          rank == 1 ? std::numeric_limits<double>::infinity() : -double(step)};
}

// The reduction in rank order, as every rank must compute it.
std::vector<double> expected_scalars(int world, int step, comm::ReduceOp op) {
  std::vector<double> acc = scalars_of(0, step);
  for (int r = 1; r < world; ++r) {
    const std::vector<double> v = scalars_of(r, step);
    for (std::size_t i = 0; i < acc.size(); ++i) {
      acc[i] = op == comm::ReduceOp::kSum ? acc[i] + v[i] : std::max(acc[i], v[i]);
    }
  }
  return acc;
}

// FNV-1a of doubles' bits.
std::uint64_t digest_of(const std::vector<double>& v) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (double d : v) {
    const auto bits = std::bit_cast<std::uint64_t>(d);
    for (int b = 0; b < 64; b += 8) {
      h ^= (bits >> b) & 0xff;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

class PartitionedScalars : public ::testing::TestWithParam<Case> {};

// Interleaved with training (between steps, and between micro-steps of an accumulating step),
// the reductions return the rank-order result, the same bits on every rank, and the training
// is unchanged: its collectives and the scalars' stay in one order on every rank.
TEST_P(PartitionedScalars, AllReduceScalarsAgreesOnEveryRankBetweenSteps) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  const Config cfg = GetParam().cfg;
  std::mt19937_64 rng(shared_seed() ^ 0x5ca1a4);
  const auto init = initial_values(rng);
  auto dev = device::open_device(cfg.device);
  Engine engine(cfg, *dev, ranks.comm());
  const auto ids = add_model(engine, init);
  engine.finalize();
  auto ref_dev = device::open_device(cfg.device);
  Engine reference(cfg, *ref_dev);
  const auto ref_ids = add_model(reference, init);
  reference.finalize();
  testing::GradFeeder feed(engine, ids), ref_feed(reference, ref_ids);
  const auto check = [&](int tag) {
    SCOPED_TRACE(::testing::Message() << "after micro-step " << tag << ", rank " << ranks.rank());
    const std::vector<double> mine = scalars_of(ranks.rank(), tag);
    for (const comm::ReduceOp op : {comm::ReduceOp::kSum, comm::ReduceOp::kMax}) {
      const std::vector<double> got = engine.all_reduce_scalars(mine, op);
      const std::vector<double> want = expected_scalars(ranks.size(), tag, op);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(std::bit_cast<std::uint64_t>(got[i]), std::bit_cast<std::uint64_t>(want[i]))
            << comm::to_string(op) << " [" << i << "]: " << got[i] << " vs " << want[i];
      }
      expect_same_on_every_rank(digest_of(got), "reduced scalars");
    }
  };
  int micro_count = 0;
  for (int step = 1; step <= 4; ++step) {
    for (int micro = 0; micro < cfg.grad_accum_steps; ++micro) {
      const RankGrads g = draw_grads(rng, ranks.size(), cfg.grad_dtype);
      feed.micro_step(g[static_cast<std::size_t>(ranks.rank())]);
      ref_feed.micro_step(mean_of(g));
      check(++micro_count);
    }
  }
  // A NaN anywhere is a NaN everywhere for kMax (a non-finite loss on one rank stops all).
  std::vector<double> loss = {double(ranks.rank())};
  if (ranks.rank() == ranks.size() - 1) loss[0] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(engine.all_reduce_scalars(loss, comm::ReduceOp::kMax)[0]));
  EXPECT_TRUE(std::isnan(engine.all_reduce_scalars(loss, comm::ReduceOp::kSum)[0]));
  EXPECT_TRUE(engine.all_reduce_scalars({}, comm::ReduceOp::kSum).empty());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::vector<float> m = engine.master(ids[k]);
    const std::vector<float> r = reference.master(ref_ids[k]);
    for (std::size_t i = 0; i < m.size(); ++i) ASSERT_NEAR(m[i], r[i], 1e-6) << kModel[k].name;
  }
  expect_same_on_every_rank(working_digest(engine, ids), "working weights");
}

std::vector<Case> scalar_cases() {
  std::vector<Case> out;
  out.push_back({"sync", base_config()});
  Config dpu = base_config();
  dpu.dpu = true;
  dpu.dpu_warmup_steps = 1;
  dpu.grad_accum_steps = 2;
  out.push_back({"dpu_accum2", dpu});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Configs, PartitionedScalars, ::testing::ValuesIn(scalar_cases()),
                         [](const auto& p) { return p.param.name; });

// ---- a failing rank (Note [Failing rank]) -------------------------------------------------

// Forwards to a real communicator until forbid(); after it, a collective is counted and not
// issued (so an engine that wrongly issues one fails the test instead of hanging it), and
// fail_next() makes the next collective throw BackendError at the call, as a failed enqueue;
// fail_agreement(part) does so for the next verify_agreement whose `what` contains `part`
// (both from the thread that issues the collectives).
class WatchedComm final : public comm::Communicator {
 public:
  explicit WatchedComm(comm::Communicator& inner) : inner_(inner) {}
  void forbid() { forbidden_ = true; }
  void fail_next() { fail_next_ = true; }
  void fail_agreement(std::string part) { fail_agreement_ = std::move(part); }
  int refused() const { return refused_; }

  int rank() const noexcept override { return inner_.rank(); }
  int size() const noexcept override { return inner_.size(); }
  int local_rank() const noexcept override { return inner_.local_rank(); }
  const char* backend_name() const noexcept override { return inner_.backend_name(); }
  void reduce_scatter(const void* send, void* recv, std::span<const std::size_t> counts,
                      DType dtype, device::Stream& stream) override {
    if (intercept("reduce_scatter")) return;
    inner_.reduce_scatter(send, recv, counts, dtype, stream);
  }
  void all_gather(const void* send, void* recv, std::span<const std::size_t> counts, DType dtype,
                  device::Stream& stream) override {
    if (intercept("all_gather")) return;
    inner_.all_gather(send, recv, counts, dtype, stream);
  }
  void all_reduce(const void* send, void* recv, std::size_t count, DType dtype, comm::ReduceOp op,
                  device::Stream& stream) override {
    if (intercept("all_reduce")) return;
    inner_.all_reduce(send, recv, count, dtype, op, stream);
  }
  void broadcast(void* buffer, std::size_t count, DType dtype, int root,
                 device::Stream& stream) override {
    if (intercept("broadcast")) return;
    inner_.broadcast(buffer, count, dtype, root, stream);
  }
  void barrier(device::Stream& stream) override {
    if (intercept("barrier")) return;
    inner_.barrier(stream);
  }
  void verify_agreement(std::uint64_t fingerprint, std::string_view what) override {
    if (!fail_agreement_.empty() && what.find(fail_agreement_) != std::string_view::npos) {
      fail_agreement_.clear();
      throw BackendError("injected failure of verify_agreement(" + std::string(what) + ")", "test",
                         1);
    }
    if (intercept("verify_agreement")) return;
    inner_.verify_agreement(fingerprint, what);
  }
  void abort(int code) noexcept override { inner_.abort(code); }

 private:
  bool intercept(const char* what) {
    if (fail_next_) {
      fail_next_ = false;
      throw BackendError(std::string("injected failure of ") + what, "test", 1);
    }
    if (!forbidden_) return false;
    ++refused_;
    ADD_FAILURE() << "rank " << rank() << " issued " << what << " after an error";
    return true;
  }

  comm::Communicator& inner_;
  std::atomic<bool> forbidden_{false}, fail_next_{false};
  std::string fail_agreement_;
  std::atomic<int> refused_{0};
};

// Trains into DPU so that an upload (and its all-gather) is pending, then stops every rank at
// the same point of the collective sequence, the last rank by a failed call.
struct FailingRun {
  explicit FailingRun(Ranks& ranks) : watched(ranks.comm()) {
    cfg = base_config();
    cfg.dpu = true;
    cfg.dpu_warmup_steps = 1;
    std::mt19937_64 seed_rng(shared_seed() ^ 0xfa11);
    rng = seed_rng;
    init = initial_values(rng);
  }
  void train(Engine& engine, const std::vector<ParamId>& ids, int rank, int world) {
    testing::GradFeeder feed(engine, ids);
    for (int step = 0; step < 3; ++step) {
      feed.micro_step(draw_grads(rng, world, cfg.grad_dtype)[static_cast<std::size_t>(rank)]);
    }
  }
  Config cfg;
  WatchedComm watched;
  std::mt19937_64 rng;
  std::vector<std::vector<float>> init;
};

TEST(PartitionedEngine, DestroyedWhileUnwindingIssuesNoCollective) {
  Ranks ranks;
  FailingRun run(ranks);
  auto dev = device::open_device(run.cfg.device);
  const int bad = ranks.size() - 1;
  try {
    Engine engine(run.cfg, *dev, run.watched);
    const auto ids = add_model(engine, run.init);
    engine.finalize();
    run.train(engine, ids, ranks.rank(), ranks.size());
    // Every rank is here, with the same collectives issued (and a DPU upload pending): from
    // now on none may issue another one.
    run.watched.forbid();
    engine.begin_step();
    if (ranks.rank() == bad) {
      engine.grads_ready({ids[0]});  // no grad_slot: InvalidArgument, as a trainer's bug
      ADD_FAILURE() << "grads_ready without grad_slot was accepted";
    }
    throw std::runtime_error("another rank failed");  // the others stop here
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(ranks.rank(), bad) << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(ranks.rank(), bad) << e.what();
  }
  // The engine's destructor returned without a collective (a wrong one is counted, not issued).
  EXPECT_EQ(run.watched.refused(), 0);
  barrier();
}

TEST(PartitionedEngine, DestroyedAfterABackendErrorIssuesNoCollective) {
  Ranks ranks;
  FailingRun run(ranks);
  auto dev = device::open_device(run.cfg.device);
  {
    Engine engine(run.cfg, *dev, run.watched);
    const auto ids = add_model(engine, run.init);
    engine.finalize();
    run.train(engine, ids, ranks.rank(), ranks.size());
    run.watched.fail_next();
    const std::vector<double> loss = {1.0};
    EXPECT_THROW(engine.all_reduce_scalars(loss, comm::ReduceOp::kSum), BackendError);
    run.watched.forbid();
    // Destroyed normally (no exception in flight): the BackendError alone makes it quiet.
  }
  EXPECT_EQ(run.watched.refused(), 0);
  barrier();
}

// ---- memory -------------------------------------------------------------------------------

TEST(PartitionedEngine, HostMemoryPerRankIsItsShare) {
  Ranks ranks;
  Config cfg = base_config();
  cfg.dtype = DType::kBF16;
  cfg.grad_dtype = DType::kBF16;
  auto dev = device::open_device(cfg.device);
  const auto pinned_before = dev->memory_stats(device::MemoryKind::kPinnedHost).used_bytes;
  const auto device_before = dev->memory_stats(device::MemoryKind::kDevice).used_bytes;
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) init.emplace_back(numel(s), 0.125f);
  Engine engine(cfg, *dev, ranks.comm());
  add_model(engine, init);
  engine.finalize();
  auto one_dev = device::open_device(cfg.device);
  Engine one(cfg, *one_dev);
  add_model(one, init);
  const offload::MemoryPlan single = one.preview_plan();
  const offload::MemoryPlan& mine = engine.plan();
  EXPECT_EQ(mine.world_size(), ranks.size());

  const std::size_t shard = engine.shard().size();
  EXPECT_EQ(mine.bytes_of("fp32 master weights"), shard * 4);
  EXPECT_EQ(mine.bytes_of("optimizer state (fp32 x2)"), shard * 8);
  EXPECT_EQ(mine.bytes_of("fp32 gradient accumulator"), shard * 4);
  EXPECT_EQ(mine.bytes_of("half-precision staging"), shard * 2);
  // The shards add up to the single-rank figures.
  unsigned long long master = mine.bytes_of("fp32 master weights"), sum = 0;
  MPI_Allreduce(&master, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(sum, single.bytes_of("fp32 master weights"));
  // ~1/N: all but the landing zone (a bucket's received part may be a whole bucket) and the
  // norm exchange, within one alignment unit (the shards are uneven by at most one).
  const std::size_t fixed = mine.bytes_of("gradient landing zone") + mine.bytes_of("norm exchange");
  const std::size_t single_scaled =
      single.total(Place::kPinnedHost) - single.bytes_of("gradient landing zone");
  const std::size_t per_elem = 4 + 8 + 4 + 2;
  EXPECT_LE(
      mine.total(Place::kPinnedHost) - fixed,
      single_scaled / static_cast<std::size_t>(ranks.size()) + offload::kFlatAlignElems * per_elem);
  EXPECT_GE(
      mine.total(Place::kPinnedHost) - fixed,
      single_scaled / static_cast<std::size_t>(ranks.size()) - offload::kFlatAlignElems * per_elem);
  // The device keeps the full working weights, plus one bucket of reduce-scatter staging.
  EXPECT_EQ(mine.bytes_of("working weights (bf16)"), single.bytes_of("working weights (bf16)"));
  EXPECT_EQ(mine.bytes_of("reduce-scatter staging"),
            cfg.bucket_bytes + 16 * static_cast<std::size_t>(ranks.size()));
  // And the allocations are what the plan says.
  EXPECT_EQ(dev->memory_stats(device::MemoryKind::kPinnedHost).used_bytes - pinned_before,
            mine.total(Place::kPinnedHost));
  EXPECT_EQ(dev->memory_stats(device::MemoryKind::kDevice).used_bytes - device_before,
            mine.total(Place::kDevice));
}

// ---- agreement at finalize ----------------------------------------------------------------

TEST(PartitionedEngine, ConfigMismatchRefusedAtFinalizeOnEveryRank) {
  Ranks ranks;
  Config cfg = base_config();
  if (ranks.rank() == 1) cfg.lr = 2e-2;
  auto dev = device::open_device(cfg.device);
  Engine engine(cfg, *dev, ranks.comm());
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) init.emplace_back(numel(s), 0.f);
  add_model(engine, init);
  try {
    engine.finalize();
    ADD_FAILURE() << "rank " << ranks.rank() << " accepted configs that differ";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "config fingerprint")) << e.what();
    EXPECT_TRUE(contains(e.what(), "rank(s) 1 disagree with rank 0")) << e.what();
  }
  EXPECT_FALSE(engine.finalized());
}

TEST(PartitionedEngine, LayoutMismatchRefusedAtFinalizeOnEveryRank) {
  Ranks ranks;
  const Config cfg = base_config();
  auto dev = device::open_device(cfg.device);
  Engine engine(cfg, *dev, ranks.comm());
  for (std::size_t k = 0; k < kModel.size(); ++k) {
    auto dims = kModel[k].dims;
    if (ranks.rank() == ranks.size() - 1 && k == 2) dims[0] += 1;
    engine.add_parameter(kModel[k].name, dims, [](std::span<float> w) {
      for (float& v : w) v = 0.5f;
    });
  }
  try {
    engine.finalize();
    ADD_FAILURE() << "rank " << ranks.rank() << " accepted layouts that differ";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "layout fingerprint")) << e.what();
    const std::string last = std::to_string(ranks.size() - 1);
    EXPECT_TRUE(contains(e.what(), "rank(s) " + last + " disagree with rank 0")) << e.what();
  }
}

// ---- checkpoints --------------------------------------------------------------------------

struct TrainedRun {
  TrainedRun(const Config& cfg, comm::Communicator& comm,
             const std::vector<std::vector<float>>& init)
      : dev(device::open_device(cfg.device)), engine(cfg, *dev, comm) {
    ids = add_model(engine, init);
    engine.finalize();
    feed = std::make_unique<testing::GradFeeder>(engine, ids);
  }
  std::unique_ptr<device::Device> dev;
  Engine engine;
  std::vector<ParamId> ids;
  std::unique_ptr<testing::GradFeeder> feed;
};

Config checkpoint_config() {
  Config cfg = base_config();
  cfg.dtype = DType::kBF16;
  cfg.grad_dtype = DType::kBF16;
  cfg.grad_accum_steps = 2;
  cfg.clip_norm = 1.0;
  cfg.dpu = true;  // a checkpoint taken with an upload pending
  cfg.dpu_warmup_steps = 1;
  return cfg;
}

TEST(PartitionedCheckpoint, ResumesOnTheSameRanksExactly) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  const std::uint64_t seed = shared_seed();
  const Config cfg = checkpoint_config();
  std::mt19937_64 rng(seed ^ 0xc0ffee);
  const auto init = initial_values(rng);
  std::vector<RankGrads> micro;
  for (int i = 0; i < 5 * cfg.grad_accum_steps; ++i) {
    micro.push_back(draw_grads(rng, ranks.size(), cfg.grad_dtype));
  }
  const auto mine = [&](int i) {
    return micro[static_cast<std::size_t>(i)][static_cast<std::size_t>(ranks.rank())];
  };
  SharedDir dir("resume", seed, ranks.size());

  TrainedRun a(cfg, ranks.comm(), init);
  const int saved_at = 3 * cfg.grad_accum_steps;
  for (int i = 0; i < saved_at; ++i) a.feed->micro_step(mine(i));
  a.engine.save_checkpoint(dir.path());
  const auto manifest = read_manifest(dir.path());
  ASSERT_TRUE(manifest.has_value());
  EXPECT_EQ(manifest->world_size, ranks.size());
  EXPECT_EQ(manifest->steps_done, 3);
  EXPECT_EQ(manifest->generation, 1);
  for (int r = 0; r < ranks.size(); ++r) {
    EXPECT_EQ(manifest->files[static_cast<std::size_t>(r)],
              rank_checkpoint_file(r, ranks.size(), 3, 1));
    EXPECT_TRUE(
        std::filesystem::exists(dir.path() + "/" + manifest->files[static_cast<std::size_t>(r)]));
  }
  for (int i = saved_at; i < static_cast<int>(micro.size()); ++i) a.feed->micro_step(mine(i));

  // Let a's last collectives finish before b's finalize makes blocking host-side MPI calls on
  // the same communicator: legal (MPI_THREAD_MULTIPLE), but two threads inside Open MPI at
  // once trip ThreadSanitizer on Open MPI's own, uninstrumented, locks.
  a.engine.flush();
  std::vector<std::vector<float>> zeros;
  for (const auto& s : kModel) zeros.emplace_back(numel(s), 0.f);
  TrainedRun b(cfg, ranks.comm(), zeros);
  b.engine.load_checkpoint(dir.path());
  EXPECT_EQ(b.engine.step(), 3);
  for (int i = saved_at; i < static_cast<int>(micro.size()); ++i) b.feed->micro_step(mine(i));
  for (std::size_t k = 0; k < a.ids.size(); ++k) {
    EXPECT_EQ(a.engine.master(a.ids[k]), b.engine.master(b.ids[k])) << kModel[k].name;
    EXPECT_EQ(a.engine.moment(a.ids[k], 0), b.engine.moment(b.ids[k], 0)) << kModel[k].name;
    EXPECT_EQ(a.engine.working(a.ids[k]), b.engine.working(b.ids[k])) << kModel[k].name;
  }
  expect_same_on_every_rank(working_digest(b.engine, b.ids), "resumed working weights");
}

TEST(PartitionedCheckpoint, AnotherWorldSizeIsRefused) {
  Ranks ranks;
  const std::uint64_t seed = shared_seed();
  const Config cfg = checkpoint_config();
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) init.emplace_back(numel(s), 0.25f);
  SharedDir many("world-many", seed, ranks.size());
  SharedDir single("world-one", seed, ranks.size());

  TrainedRun a(cfg, ranks.comm(), init);
  a.engine.save_checkpoint(many.path());
  if (ranks.rank() == 0) {
    // One rank reading N ranks' checkpoint, and writing its own.
    auto dev = device::open_device(cfg.device);
    Engine one(cfg, *dev);
    add_model(one, init);
    one.finalize();
    try {
      one.load_checkpoint(many.path());
      ADD_FAILURE() << "one rank loaded a checkpoint of " << ranks.size();
    } catch (const InvalidArgument& e) {
      EXPECT_TRUE(contains(
          e.what(), "saved by " + std::to_string(ranks.size()) + " rank(s) but this run has 1"))
          << e.what();
      EXPECT_TRUE(contains(e.what(), "resharding is not supported yet")) << e.what();
    }
    one.save_checkpoint(single.path());
  }
  barrier();
  // N ranks reading one rank's checkpoint: refused on every rank.
  try {
    a.engine.load_checkpoint(single.path());
    ADD_FAILURE() << "rank " << ranks.rank() << " loaded a single-rank checkpoint";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(
        contains(e.what(), "saved by 1 rank(s) but this run has " + std::to_string(ranks.size())))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "resharding is not supported yet")) << e.what();
  }
  // N - 1 ranks (a communicator without the last rank) reading N ranks' checkpoint.
  const int fewer = ranks.size() - 1;
  MPI_Comm sub = MPI_COMM_NULL;
  ASSERT_EQ(
      MPI_Comm_split(MPI_COMM_WORLD, ranks.rank() < fewer ? 0 : MPI_UNDEFINED, ranks.rank(), &sub),
      MPI_SUCCESS);
  if (sub != MPI_COMM_NULL) {
    {
      comm::MpiCommunicator smaller(comm::MpiEnvironment::acquire(), sub);
      auto dev = device::open_device(cfg.device);
      Engine e(cfg, *dev, smaller);
      add_model(e, init);
      e.finalize();
      try {
        e.load_checkpoint(many.path());
        ADD_FAILURE() << fewer << " ranks loaded a checkpoint of " << ranks.size();
      } catch (const InvalidArgument& err) {
        EXPECT_TRUE(contains(err.what(), "saved by " + std::to_string(ranks.size()) +
                                             " rank(s) but this run has " + std::to_string(fewer)))
            << err.what();
        EXPECT_TRUE(contains(err.what(), "resharding is not supported yet")) << err.what();
      }
    }
    MPI_Comm_free(&sub);
  }
  barrier();
}

TEST(PartitionedCheckpoint, MissingOrCorruptRankFileNamesItAndChangesNothing) {
  Ranks ranks;
  const std::uint64_t seed = shared_seed();
  const Config cfg = checkpoint_config();
  std::mt19937_64 rng(seed ^ 0xbad);
  const auto init = initial_values(rng);
  SharedDir dir("corrupt", seed, ranks.size());
  TrainedRun a(cfg, ranks.comm(), init);
  for (int i = 0; i < 2 * cfg.grad_accum_steps; ++i) {
    a.feed->micro_step(
        draw_grads(rng, ranks.size(), cfg.grad_dtype)[static_cast<std::size_t>(ranks.rank())]);
  }
  a.engine.save_checkpoint(dir.path());
  std::vector<std::vector<float>> zeros;
  for (const auto& s : kModel) zeros.emplace_back(numel(s), 0.f);
  TrainedRun b(cfg, ranks.comm(), zeros);
  const std::vector<float> before = b.engine.master(b.ids[3]);
  const int victim = ranks.size() - 1;
  const auto manifest = read_manifest(dir.path());
  ASSERT_TRUE(manifest.has_value());
  const std::string victim_file = manifest->files[static_cast<std::size_t>(victim)];

  const auto expect_refused = [&](const char* why_victim) {
    try {
      b.engine.load_checkpoint(dir.path());
      ADD_FAILURE() << "rank " << ranks.rank() << " loaded a damaged checkpoint";
    } catch (const Error& e) {
      if (ranks.rank() == victim) {
        EXPECT_TRUE(contains(e.what(), "rank " + std::to_string(victim))) << e.what();
        EXPECT_TRUE(contains(e.what(), victim_file)) << e.what();
        EXPECT_TRUE(contains(e.what(), why_victim)) << e.what();
      } else {
        EXPECT_TRUE(contains(e.what(), "another rank could not load")) << e.what();
      }
    }
    EXPECT_EQ(b.engine.step(), 0);
    EXPECT_EQ(b.engine.master(b.ids[3]), before) << "a refused load changed the state";
  };

  // A flipped byte in the middle of the victim's sections.
  if (ranks.rank() == 0) {
    const std::string path = dir.path() + "/" + victim_file;
    const auto size = std::filesystem::file_size(path);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 64));
    const char c = static_cast<char>(f.get());
    f.seekp(static_cast<std::streamoff>(size - 64));
    f.put(static_cast<char>(c ^ 0x5a));
  }
  barrier();
  expect_refused("fails its checksum");
  barrier();
  if (ranks.rank() == 0) std::filesystem::remove(dir.path() + "/" + victim_file);
  barrier();
  expect_refused("cannot open checkpoint");
  barrier();
  // Without a manifest (an interrupted save) every rank refuses alike.
  if (ranks.rank() == 0) std::filesystem::remove(dir.path() + "/" + kManifestFile);
  barrier();
  try {
    b.engine.load_checkpoint(dir.path());
    ADD_FAILURE() << "a checkpoint without a manifest was loaded";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), "has no manifest.txt")) << e.what();
  }
}

// Everything a loaded checkpoint decides, read back through the engine (collective: master()
// and moment() gather; each flushes, so working() is the master's rounding).
struct Snapshot {
  std::int64_t step = 0;
  std::vector<std::vector<float>> values;  // per parameter: master, moments, working
  bool operator==(const Snapshot&) const = default;
};
void PrintTo(const Snapshot& s, std::ostream* os) {
  *os << "step " << s.step << " with " << s.values.size() << " arrays";
}

Snapshot snapshot(Engine& e, const std::vector<ParamId>& ids) {
  Snapshot s;
  s.step = e.step();
  for (ParamId p : ids) {
    s.values.push_back(e.master(p));
    s.values.push_back(e.moment(p, 0));
    s.values.push_back(e.moment(p, 1));
    s.values.push_back(e.working(p));
  }
  return s;
}

void train_steps(TrainedRun& run, std::mt19937_64& rng, int steps, const Ranks& ranks) {
  const Config& cfg = run.engine.config();
  for (int i = 0; i < steps * cfg.grad_accum_steps; ++i) {
    run.feed->micro_step(
        draw_grads(rng, ranks.size(), cfg.grad_dtype)[static_cast<std::size_t>(ranks.rank())]);
  }
}

// A save killed after (or while) its rank files were written, before its manifest replaced the
// old one, loses nothing: the old manifest names the old files, which it never wrote over.
TEST(PartitionedCheckpoint, AnInterruptedSaveLeavesThePreviousOneLoadable) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  const std::uint64_t seed = shared_seed();
  const Config cfg = checkpoint_config();
  std::mt19937_64 rng(seed ^ 0x1e5a);
  const auto init = initial_values(rng);
  SharedDir dir("interrupted", seed, ranks.size());
  WatchedComm watched(ranks.comm());
  TrainedRun a(cfg, watched, init);
  train_steps(a, rng, 2, ranks);
  a.engine.save_checkpoint(dir.path());
  const Snapshot saved = snapshot(a.engine, a.ids);
  const auto manifest = read_manifest(dir.path());
  ASSERT_TRUE(manifest.has_value());
  EXPECT_EQ(manifest->steps_done, 2);
  const std::int64_t next = manifest->generation + 1;
  EXPECT_EQ(next_checkpoint_generation(dir.path()), next);

  // The save of step 3 dies on every rank after writing its rank file, at the agreement that
  // precedes the manifest (as a job killed there).
  train_steps(a, rng, 1, ranks);
  watched.fail_agreement("writing the rank files");
  EXPECT_THROW(a.engine.save_checkpoint(dir.path()), BackendError);
  barrier();  // each rank threw without waiting for the others' writes
  std::vector<std::string> strays;
  for (int r = 0; r < ranks.size(); ++r) {
    strays.push_back(rank_checkpoint_file(r, ranks.size(), 3, next));
    EXPECT_TRUE(std::filesystem::exists(dir.path() + "/" + strays.back())) << strays.back();
  }
  const auto after = read_manifest(dir.path());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->generation, manifest->generation);
  EXPECT_EQ(after->files, manifest->files);
  // And a temporary of an atomic write that never got its rename.
  if (ranks.rank() == 0) {
    std::ofstream(dir.path() + "/" + strays[0] + ".tmp.12345.678") << "half a rank file";
  }
  barrier();

  std::vector<std::vector<float>> zeros;
  for (const auto& s : kModel) zeros.emplace_back(numel(s), 0.f);
  TrainedRun b(cfg, ranks.comm(), zeros);
  b.engine.load_checkpoint(dir.path());
  EXPECT_EQ(snapshot(b.engine, b.ids), saved) << "beside the complete rank files of a newer save";

  // Killed while writing them: a torn one (worse than an atomic write can leave).
  barrier();
  if (ranks.rank() == 0) {
    const std::string torn = dir.path() + "/" + strays.back();
    std::filesystem::resize_file(torn, std::filesystem::file_size(torn) / 2);
  }
  barrier();
  b.engine.load_checkpoint(dir.path());
  EXPECT_EQ(snapshot(b.engine, b.ids), saved) << "beside a torn rank file of a newer save";

  // The next save never writes over the strays' names, and removes them once it is committed.
  EXPECT_EQ(next_checkpoint_generation(dir.path()), next + 1);
  barrier();
  b.engine.save_checkpoint(dir.path());
  const auto now = read_manifest(dir.path());
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->generation, next + 1);
  EXPECT_EQ(now->steps_done, 2);
  EXPECT_EQ(files_in(dir.path()), committed(*now));
}

// A final checkpoint right after a periodic one saves twice at one step: the second must not
// write over the files the first one's manifest names, and each save removes the older files.
// Nor may a save at the manifest's step with other contents (another run's, in the same
// directory) that dies before its manifest: the manifest would name a mix of the two runs' files.
TEST(PartitionedCheckpoint, SavingTwiceAtOneStepThenLoading) {
  ZORO_TRACE_SEED();
  Ranks ranks;
  const std::uint64_t seed = shared_seed();
  const Config cfg = checkpoint_config();
  std::mt19937_64 rng(seed ^ 0x7a1c);
  const auto init = initial_values(rng);
  SharedDir dir("twice", seed, ranks.size());
  TrainedRun a(cfg, ranks.comm(), init);
  train_steps(a, rng, 2, ranks);
  a.engine.save_checkpoint(dir.path());
  const auto first = read_manifest(dir.path());
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->generation, 1);
  EXPECT_EQ(files_in(dir.path()), committed(*first));
  barrier();  // every rank has listed before the next save removes files

  a.engine.save_checkpoint(dir.path());
  const auto second = read_manifest(dir.path());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->generation, 2);
  EXPECT_EQ(second->steps_done, 2);
  for (int r = 0; r < ranks.size(); ++r) {
    EXPECT_EQ(second->files[static_cast<std::size_t>(r)],
              rank_checkpoint_file(r, ranks.size(), 2, 2));
  }
  EXPECT_EQ(files_in(dir.path()), committed(*second)) << "the first save's files remain";
  const Snapshot saved = snapshot(a.engine, a.ids);
  a.engine.flush();

  {
    WatchedComm watched(ranks.comm());
    std::mt19937_64 other_rng(seed ^ 0x07e4);
    TrainedRun other(cfg, watched, initial_values(other_rng));
    train_steps(other, other_rng, 2, ranks);
    watched.fail_agreement("writing the rank files");
    EXPECT_THROW(other.engine.save_checkpoint(dir.path()), BackendError);
  }
  barrier();

  std::vector<std::vector<float>> zeros;
  for (const auto& s : kModel) zeros.emplace_back(numel(s), 0.f);
  TrainedRun b(cfg, ranks.comm(), zeros);
  b.engine.load_checkpoint(dir.path());
  EXPECT_EQ(snapshot(b.engine, b.ids), saved);

  // A later step's save replaces them in turn, past the generation of the one that died.
  train_steps(b, rng, 1, ranks);
  b.engine.save_checkpoint(dir.path());
  const auto third = read_manifest(dir.path());
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->generation, 4);
  EXPECT_EQ(third->steps_done, 3);
  EXPECT_EQ(files_in(dir.path()), committed(*third));
}

}  // namespace
}  // namespace zoro

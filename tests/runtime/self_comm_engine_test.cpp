// The engine with a communicator of one rank is the single-rank engine, bit for bit; and the
// single-rank side of partitioned checkpoints (the manifest, generations, world-size
// refusals) without MPI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <span>
#include <string_view>

#include "comm/communicator.h"
#include "runtime/base/error.h"
#include "runtime/base/file_util.h"
#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "tests/runtime/grad_feeder.h"
#include "tests/support/random.h"

namespace zoro {
namespace {

struct Shape {
  std::string name;
  std::vector<std::int64_t> dims;
};

const std::vector<Shape> kModel = {
    {"embed", {37, 5}}, {"fc1.w", {5, 64}}, {"fc1.b", {64}}, {"fc2.w", {64, 9}}, {"fc2.b", {9}}};

Config small_config() {
  Config c;
  c.device = "host:mem=64MiB";
  c.dtype = DType::kBF16;
  c.grad_dtype = DType::kBF16;
  c.optimizer = OptimizerKind::kAdamW;
  c.lr = 1e-2;
  c.weight_decay = 0.05;
  c.clip_norm = 0.5;
  c.grad_accum_steps = 2;
  c.bucket_bytes = 4096;
  c.bucket_count = 2;
  c.chunk_elems = 1024;
  c.cpu_threads = 1;
  return c;
}

std::vector<ParamId> add_model(Engine& e, const std::vector<std::vector<float>>& init) {
  std::vector<ParamId> ids;
  for (std::size_t k = 0; k < kModel.size(); ++k) {
    ids.push_back(e.add_parameter(kModel[k].name, kModel[k].dims, init[k]));
  }
  return ids;
}

std::string scratch_dir(const char* tag) {
  return (std::filesystem::temp_directory_path() /
          ("zoro-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" +
           std::to_string(::zoro::testing::test_seed())))
      .string();
}

class SelfCommEngine : public ::testing::TestWithParam<bool> {};

TEST_P(SelfCommEngine, IsTheSingleRankEngineBitForBit) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(1);
  Config cfg = small_config();
  cfg.dpu = GetParam();
  cfg.dpu_warmup_steps = 1;
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) {
    std::size_t n = 1;
    for (auto d : s.dims) n *= static_cast<std::size_t>(d);
    init.push_back(testing::random_floats(rng, n, -0.5f, 0.5f));
  }
  auto dev_a = device::open_device(cfg.device);
  auto dev_b = device::open_device(cfg.device);
  comm::SelfCommunicator self;
  Engine plain(cfg, *dev_a);
  Engine with_comm(cfg, *dev_b, self);
  const auto ids_a = add_model(plain, init);
  const auto ids_b = add_model(with_comm, init);
  plain.finalize();
  with_comm.finalize();
  EXPECT_EQ(with_comm.world_size(), 1);
  EXPECT_EQ(with_comm.shard().size(), with_comm.layout().total_elems());
  EXPECT_EQ(with_comm.plan().total(offload::Place::kPinnedHost),
            plain.plan().total(offload::Place::kPinnedHost));
  testing::GradFeeder feed_a(plain, ids_a), feed_b(with_comm, ids_b);
  for (int step = 0; step < 4 * cfg.grad_accum_steps; ++step) {
    std::vector<std::vector<float>> grads;
    for (ParamId p : ids_a) {
      grads.push_back(testing::random_floats(rng, plain.layout().slot(p).numel, -2.f, 2.f));
    }
    const StepReport ra = feed_a.micro_step(grads);
    const StepReport rb = feed_b.micro_step(grads);
    ASSERT_EQ(ra.applied, rb.applied);
    ASSERT_EQ(ra.grad_norm, rb.grad_norm);
    ASSERT_EQ(ra.clip_factor, rb.clip_factor);
  }
  for (std::size_t k = 0; k < ids_a.size(); ++k) {
    EXPECT_EQ(plain.master(ids_a[k]), with_comm.master(ids_b[k])) << kModel[k].name;
    EXPECT_EQ(plain.working(ids_a[k]), with_comm.working(ids_b[k])) << kModel[k].name;
    EXPECT_EQ(plain.moment(ids_a[k], 1), with_comm.moment(ids_b[k], 1)) << kModel[k].name;
  }
  // A single rank keeps the single-file checkpoint: dir/zoro.ckpt, no manifest.
  const std::string dir = scratch_dir("selfcomm");
  with_comm.save_checkpoint(dir);
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + kCheckpointFile));
  EXPECT_FALSE(std::filesystem::exists(dir + "/" + kManifestFile));
  plain.load_checkpoint(dir);  // the same format
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Modes, SelfCommEngine, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "dpu" : "sync"; });

// A SelfCommunicator that counts the collectives it is asked for.
class CountingSelf final : public comm::Communicator {
 public:
  int calls = 0;
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  int local_rank() const noexcept override { return 0; }
  const char* backend_name() const noexcept override { return "counting-self"; }
  void reduce_scatter(const void* send, void* recv, std::span<const std::size_t> counts,
                      DType dtype, device::Stream& stream) override {
    ++calls;
    inner_.reduce_scatter(send, recv, counts, dtype, stream);
  }
  void all_gather(const void* send, void* recv, std::span<const std::size_t> counts, DType dtype,
                  device::Stream& stream) override {
    ++calls;
    inner_.all_gather(send, recv, counts, dtype, stream);
  }
  void all_reduce(const void* send, void* recv, std::size_t count, DType dtype, comm::ReduceOp op,
                  device::Stream& stream) override {
    ++calls;
    inner_.all_reduce(send, recv, count, dtype, op, stream);
  }
  void broadcast(void* buffer, std::size_t count, DType dtype, int root,
                 device::Stream& stream) override {
    ++calls;
    inner_.broadcast(buffer, count, dtype, root, stream);
  }
  void barrier(device::Stream& stream) override {
    ++calls;
    inner_.barrier(stream);
  }
  void verify_agreement(std::uint64_t fingerprint, std::string_view what) override {
    ++calls;
    inner_.verify_agreement(fingerprint, what);
  }
  void abort(int code) noexcept override { inner_.abort(code); }

 private:
  comm::SelfCommunicator inner_;
};

// One rank: the values come back as they are (bits included: NaN, -0, infinities), with no
// collective; the call is refused before finalize and inside a micro-step, with or without a
// communicator.
TEST(SelfCommEngine, AllReduceScalarsOfOneRankReturnsTheValues) {
  Config cfg = small_config();
  cfg.dpu = true;
  cfg.dpu_warmup_steps = 0;
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) {
    std::size_t n = 1;
    for (auto d : s.dims) n *= static_cast<std::size_t>(d);
    init.emplace_back(n, 0.25f);
  }
  const std::vector<double> values = {1.0 / 3, -0.0, std::numeric_limits<double>::quiet_NaN(),
                                      -std::numeric_limits<double>::infinity(), 1e300};
  auto dev_a = device::open_device(cfg.device);
  auto dev_b = device::open_device(cfg.device);
  CountingSelf counting;
  Engine plain(cfg, *dev_a);
  Engine with_comm(cfg, *dev_b, counting);
  for (Engine* e : {&plain, &with_comm}) {
    const auto ids = add_model(*e, init);
    EXPECT_THROW(e->all_reduce_scalars(values, comm::ReduceOp::kSum), InvalidArgument);
    e->finalize();
    const int calls_before = counting.calls;
    testing::GradFeeder feed(*e, ids);
    for (int micro = 0; micro < 3; ++micro) {
      std::vector<std::vector<float>> grads;
      for (ParamId p : ids) grads.emplace_back(e->layout().slot(p).numel, 0.5f);
      feed.micro_step(grads);  // the last leaves a DPU update running
      for (const comm::ReduceOp op : {comm::ReduceOp::kSum, comm::ReduceOp::kMax}) {
        const std::vector<double> got = e->all_reduce_scalars(values, op);
        ASSERT_EQ(got.size(), values.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
          EXPECT_EQ(std::bit_cast<std::uint64_t>(got[i]), std::bit_cast<std::uint64_t>(values[i]))
              << i;
        }
      }
    }
    EXPECT_EQ(counting.calls, calls_before) << "a collective for one rank";
    e->begin_step();
    try {
      e->all_reduce_scalars(values, comm::ReduceOp::kMax);
      ADD_FAILURE() << "all_reduce_scalars inside a micro-step was accepted";
    } catch (const InvalidArgument& err) {
      EXPECT_NE(std::string(err.what()).find("inside a micro-step"), std::string::npos)
          << err.what();
    }
    e->end_step();
  }
}

TEST(PartitionedCheckpoint, OneRankRefusesACheckpointOfManyRanks) {
  const std::string dir = scratch_dir("manifest");
  std::filesystem::create_directories(dir);
  Config cfg = small_config();
  auto dev = device::open_device(cfg.device);
  Engine e(cfg, *dev);
  std::vector<std::vector<float>> init;
  for (const auto& s : kModel) {
    std::size_t n = 1;
    for (auto d : s.dims) n *= static_cast<std::size_t>(d);
    init.emplace_back(n, 0.25f);
  }
  add_model(e, init);
  e.finalize();
  CheckpointManifest written{3, e.layout().fingerprint(), cfg.fingerprint(), 7, 2, {}};
  for (int r = 0; r < 3; ++r) written.files.push_back(rank_checkpoint_file(r, 3, 7, 2));
  write_manifest(dir, written);
  const auto m = read_manifest(dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->world_size, 3);
  EXPECT_EQ(m->steps_done, 7);
  EXPECT_EQ(m->layout_fingerprint, e.layout().fingerprint());
  EXPECT_EQ(m->generation, 2);
  EXPECT_EQ(m->files, written.files);
  EXPECT_EQ(m->files[1], "rank-1-of-3.step-7.gen-2.ckpt");
  try {
    e.load_checkpoint(dir);
    ADD_FAILURE() << "a checkpoint of 3 ranks was loaded by one";
  } catch (const InvalidArgument& err) {
    EXPECT_NE(std::string(err.what()).find("saved by 3 rank(s) but this run has 1"),
              std::string::npos)
        << err.what();
    EXPECT_NE(std::string(err.what()).find("resharding is not supported yet"), std::string::npos);
  }
  // A damaged manifest is refused by its checksum, naming the file.
  {
    std::fstream f(dir + "/" + kManifestFile, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('9');
  }
  EXPECT_THROW(
      {
        try {
          (void)read_manifest(dir);
        } catch (const IoError& err) {
          EXPECT_NE(std::string(err.what()).find(kManifestFile), std::string::npos);
          throw;
        }
      },
      IoError);
  EXPECT_FALSE(read_manifest(dir + "/absent").has_value());
  std::filesystem::remove_all(dir);
}

// A manifest as text, with its checksum (as write_manifest does, but free to be anything).
void write_manifest_text(const std::string& dir, std::string text) {
  text += "crc32c=" + std::to_string(crc32c(text.data(), text.size())) + "\n";
  std::ofstream(dir + "/" + kManifestFile, std::ios::binary) << text;
}

void touch(const std::string& path) { std::ofstream(path) << "x"; }

std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// Note [Partitioned checkpoint]: the manifest names its rank files; a new save takes a
// generation no file present has; a committed save removes the others.
TEST(PartitionedCheckpoint, ManifestNamesTheFilesOfItsGeneration) {
  const std::string dir = scratch_dir("generations");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(next_checkpoint_generation(dir), 1) << "a directory that does not exist yet";
  std::filesystem::create_directories(dir);
  EXPECT_EQ(next_checkpoint_generation(dir), 1);

  // A manifest of before generations names rank-<r>-of-<N>.ckpt: generation 0, still loadable.
  write_manifest_text(dir,
                      "zoro-manifest=1\nworld_size=2\nlayout_fingerprint=5\n"
                      "config_fingerprint=6\nsteps_done=4\n"
                      "file=rank-0-of-2.ckpt\nfile=rank-1-of-2.ckpt\n");
  auto m = read_manifest(dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->generation, 0);
  EXPECT_EQ(m->files, (std::vector<std::string>{"rank-0-of-2.ckpt", "rank-1-of-2.ckpt"}));
  EXPECT_EQ(next_checkpoint_generation(dir), 1);

  // Malformed: not one file per rank, or a name outside the directory.
  const auto expect_malformed = [&](const std::string& text, const std::string& why) {
    write_manifest_text(dir, text);
    try {
      (void)read_manifest(dir);
      ADD_FAILURE() << "a manifest with " << why << " was read";
    } catch (const IoError& err) {
      EXPECT_NE(std::string(err.what()).find("malformed"), std::string::npos) << err.what();
      EXPECT_NE(std::string(err.what()).find(why), std::string::npos) << err.what();
    }
  };
  const std::string head =
      "zoro-manifest=1\nworld_size=2\nlayout_fingerprint=5\nconfig_fingerprint=6\n"
      "steps_done=4\ngeneration=3\n";
  expect_malformed(head + "file=rank-0-of-2.step-4.gen-3.ckpt\n",
                   "names 1 rank file(s) for world_size 2");
  expect_malformed(head + "file=rank-0-of-2.step-4.gen-3.ckpt\nfile=../elsewhere.ckpt\n",
                   "file name '../elsewhere.ckpt'");

  // The next generation is past the manifest's and every rank file's, readable manifest or not.
  CheckpointManifest current{2, 5, 6, 4, 3, {}};
  for (int r = 0; r < 2; ++r) current.files.push_back(rank_checkpoint_file(r, 2, 4, 3));
  write_manifest(dir, current);
  EXPECT_EQ(next_checkpoint_generation(dir), 4);
  for (const auto& f : current.files) touch(dir + "/" + f);
  const std::string stray = rank_checkpoint_file(1, 2, 5, 6);  // an interrupted save's
  touch(dir + "/" + stray);
  EXPECT_EQ(next_checkpoint_generation(dir), 7);
  {
    std::fstream f(dir + "/" + kManifestFile, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('9');
  }
  EXPECT_EQ(next_checkpoint_generation(dir), 7) << "an unreadable manifest";
  write_manifest(dir, current);

  // Removing: every rank file the manifest does not name (older, interrupted, of before
  // generations, of another world size) and temporaries of interrupted writes; nothing else.
  const std::vector<std::string> others = {
      stray,
      rank_checkpoint_file(0, 2, 2, 1),
      "rank-0-of-2.ckpt",
      rank_checkpoint_file(3, 4, 4, 2),
      rank_checkpoint_file(0, 2, 5, 6) + ".tmp.4242.17",
      std::string(kManifestFile) + ".tmp.4242.18",
  };
  const std::vector<std::string> unrelated = {kCheckpointFile, "notes.txt", "rank-0-of-2.ckpt.bak",
                                              "rank-x-of-2.ckpt",
                                              "rank-0-of-2.step-4.gen-3.ckpt.old"};
  for (const auto& f : others) touch(dir + "/" + f);
  for (const auto& f : unrelated) touch(dir + "/" + f);
  EXPECT_EQ(remove_unlisted_rank_files(dir, current), others.size());
  std::set<std::string> kept(unrelated.begin(), unrelated.end());
  kept.insert(current.files.begin(), current.files.end());
  kept.insert(kManifestFile);
  EXPECT_EQ(files_in(dir), kept);
  EXPECT_EQ(remove_unlisted_rank_files(dir + "/absent", current), 0u) << "best effort";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace zoro

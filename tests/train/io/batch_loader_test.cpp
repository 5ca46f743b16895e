// The batch loader on the host backend: order and content, slot reuse ordered after the
// consumer's release (by the trace's sequence numbers, never clocks), producer errors, misuse,
// and shutdown at any point.
#include "examples/zoro_train/io/batch_loader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <future>

#include "examples/zoro_train/io/synthetic_task.h"
#include "runtime/base/check.h"
#include "runtime/base/error.h"
#include "runtime/device/trace.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

using device::MemoryKind;

std::vector<std::int32_t> expected_batch(const BatchSource& source, const BatchLoaderOptions& o,
                                         std::int64_t step, int micro) {
  const std::size_t n = static_cast<std::size_t>(o.batch * o.seq_len);
  std::vector<std::int32_t> both(2 * n);
  source.make_batch(o.split,
                    {.seed = o.seed,
                     .rank = o.rank,
                     .world_size = o.world_size,
                     .step = step,
                     .micro_step = micro},
                    o.batch, o.seq_len, std::span(both).first(n), std::span(both).last(n));
  return both;
}

// Copies the batch's device memory (inputs then targets) out in stream order after its copy.
std::vector<std::int32_t> read_device(device::Device& dev, device::Stream& compute,
                                      const LoadedBatch& b) {
  const std::size_t n = static_cast<std::size_t>(b.batch * b.seq_len);
  auto staging = dev.allocate(MemoryKind::kPinnedHost, 2 * n * sizeof(std::int32_t));
  b.wait_ready(compute);
  compute.copy_async(staging.data(), b.inputs, n * sizeof(std::int32_t));
  compute.copy_async(staging.as<std::int32_t>() + n, b.targets, n * sizeof(std::int32_t));
  compute.synchronize();
  return {staging.as<std::int32_t>(), staging.as<std::int32_t>() + 2 * n};
}

TEST(BatchLoader, DeliversBatchesInOrderWithTheirContent) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(30);
  auto dev = device::open_device("host:mem=64MiB");
  auto compute = dev->create_stream({.name = "compute"});
  const SyntheticTask task;
  const BatchLoaderOptions o{.batch = 3,
                             .seq_len = 8,
                             .seed = rng(),
                             .rank = 1,
                             .world_size = 2,
                             .first_step = 7,
                             .grad_accum = 2,
                             .depth = 3};
  BatchLoader loader(*dev, task, o);
  std::int64_t step = 7;
  int micro = 0;
  for (int i = 0; i < 10; ++i) {
    const LoadedBatch b = loader.next();
    EXPECT_EQ(b.step, step);
    EXPECT_EQ(b.micro_step, micro);
    EXPECT_EQ(b.batch, 3);
    EXPECT_EQ(b.seq_len, 8);
    EXPECT_GE(b.wait_ms, 0.0);
    EXPECT_EQ(dev->memory_kind_of(b.inputs, 24 * sizeof(std::int32_t)), MemoryKind::kDevice);
    const auto expected = expected_batch(task, o, step, micro);
    EXPECT_EQ(read_device(*dev, *compute, b), expected) << "step " << step << "." << micro;
    EXPECT_TRUE(b.ready());
    EXPECT_TRUE(std::equal(b.host_inputs, b.host_inputs + 24, expected.begin()));
    EXPECT_TRUE(std::equal(b.host_targets, b.host_targets + 24, expected.begin() + 24));
    loader.release(b, *compute);
    if (++micro == 2) {
      micro = 0;
      ++step;
    }
  }
  EXPECT_EQ(loader.batches_served(), 10);
  EXPECT_GE(loader.total_wait_ms(), 0.0);
}

// A slot released while compute work still reads it is not refilled until that work is done:
// compute is held inside a host function (a gate no clock opens) while the producer already
// reuses the slot; the copy into it must wait, and the reader sees the old batch.
TEST(BatchLoader, NeverOverwritesASlotStillInUse) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(31);
  auto dev = device::open_device("host:mem=64MiB:trace");
  auto compute = dev->create_stream({.name = "compute"});
  const SyntheticTask task;
  const BatchLoaderOptions o{.batch = 2, .seq_len = 16, .seed = rng(), .depth = 2};
  BatchLoader loader(*dev, task, o);

  const LoadedBatch b0 = loader.next();
  b0.wait_ready(*compute);
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  std::vector<std::int32_t> seen(64);
  compute->launch_host_fn("read batch 0", [&, opened] {
    opened.wait();
    std::memcpy(seen.data(), b0.inputs, 32 * sizeof(std::int32_t));  // inputs, then targets
    std::memcpy(seen.data() + 32, b0.targets, 32 * sizeof(std::int32_t));
  });
  loader.release(b0, *compute);
  const LoadedBatch b1 = loader.next();
  const LoadedBatch b2 = loader.next();  // slot 0 again: its copy is enqueued...
  EXPECT_EQ(b2.inputs, b0.inputs);
  EXPECT_FALSE(b2.ready());  // ...but waits for compute, which is still at the gate
  gate.set_value();
  compute->synchronize();
  EXPECT_EQ(seen, expected_batch(task, o, 0, 0));
  EXPECT_EQ(read_device(*dev, *compute, b2), expected_batch(task, o, 2, 0));

  const auto records = dev->trace()->snapshot();
  const auto& reader = device::find_record(records, "compute", "read batch 0");
  const auto& refill = device::find_record(records, "data", "batch 2.0 slot 0");
  EXPECT_GT(refill.seq_begin, reader.seq_end);
  loader.release(b1, *compute);
  loader.release(b2, *compute);
}

TEST(BatchLoader, RefusesMisuse) {
  auto dev = device::open_device("host:mem=64MiB");
  auto compute = dev->create_stream();
  const SyntheticTask task;
  BatchLoader loader(*dev, task, {.batch = 1, .seq_len = 4, .depth = 2});
  const LoadedBatch a = loader.next();
  const LoadedBatch b = loader.next();
  ZORO_EXPECT_ERROR(InvalidArgument, loader.next(), "all 2 slots are held by the consumer");
  loader.release(a, *compute);
  ZORO_EXPECT_ERROR(InvalidArgument, loader.release(a, *compute), "released twice");
  ZORO_EXPECT_ERROR(InvalidArgument, loader.release(LoadedBatch{}, *compute),
                    "not from this loader");
  const LoadedBatch c = loader.next();
  EXPECT_EQ(c.step, 2);
  loader.release(b, *compute);
  loader.release(c, *compute);
  ZORO_EXPECT_ERROR(InvalidArgument, BatchLoader(*dev, task, {.depth = 1}), "depth 1");
  ZORO_EXPECT_ERROR(InvalidArgument, BatchLoader(*dev, task, {.grad_accum = 0}), "grad_accum 0");
  ZORO_EXPECT_ERROR(OutOfMemory, BatchLoader(*dev, task, {.batch = 2048, .seq_len = 4096}), "");
}

// Fails at one step, as a data source may (a file that went away, a bad token).
class FailingSource final : public BatchSource {
 public:
  explicit FailingSource(std::int64_t fail_at) : fail_at_(fail_at) {}
  void make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                  std::span<std::int32_t> inputs, std::span<std::int32_t> targets) const override {
    ZORO_CHECK(key.step != fail_at_, "source failed at step " << key.step);
    task_.make_batch(split, key, batch, seq_len, inputs, targets);
  }
  int vocab_size() const override { return 257; }

 private:
  std::int64_t fail_at_;
  SyntheticTask task_;
};

TEST(BatchLoader, ProducerErrorsReachNext) {
  auto dev = device::open_device("host:mem=64MiB");
  auto compute = dev->create_stream();
  const FailingSource source(3);
  BatchLoader loader(*dev, source, {.batch = 2, .seq_len = 4, .depth = 3});
  for (int step = 0; step < 3; ++step) {
    const LoadedBatch b = loader.next();  // the batches before the failure still arrive
    EXPECT_EQ(b.step, step);
    loader.release(b, *compute);
  }
  ZORO_EXPECT_ERROR(InvalidArgument, loader.next(), "source failed at step 3");
  ZORO_EXPECT_ERROR(InvalidArgument, loader.next(), "source failed at step 3");
}

TEST(BatchLoader, ShutsDownCleanlyAtAnyPoint) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(32);
  auto dev = device::open_device("host:mem=64MiB");
  auto compute = dev->create_stream();
  const SyntheticTask task;
  for (int trial = 0; trial < 20; ++trial) {
    BatchLoader loader(*dev, task, {.batch = 2, .seq_len = 8, .seed = rng(), .depth = 3});
    const int take = trial % 5;  // 0: destroyed while the producer may still be filling
    for (int i = 0; i < take; ++i) {
      const LoadedBatch b = loader.next();
      if (i % 2 == 0) loader.release(b, *compute);  // some batches stay held
    }
  }
  compute->synchronize();
  EXPECT_EQ(dev->memory_stats(MemoryKind::kDevice).allocations, 0u);
  EXPECT_EQ(dev->memory_stats(MemoryKind::kPinnedHost).allocations, 0u);
}

}  // namespace
}  // namespace zoro::train

// SelfCommunicator: the communicator of a one-rank run, on every backend (the CUDA instance
// skips visibly without a GPU).
#include <gtest/gtest.h>

#include <vector>

#include "comm/communicator.h"
#include "runtime/base/error.h"
#include "tests/support/backends.h"

namespace zoro::comm {
namespace {

using device::MemoryKind;

class SelfCommunicatorTest : public ::zoro::testing::BackendTest {};

TEST_P(SelfCommunicatorTest, CollectivesOfOneRankAreCopies) {
  SelfCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.local_rank(), 0);
  auto stream = device().create_stream();
  const std::size_t n = 1000;
  std::vector<float> host(n);
  for (std::size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i) * 0.5f;
  auto src = device().allocate(MemoryKind::kDevice, n * 4);
  auto dst = device().allocate(MemoryKind::kDevice, n * 4);
  device().copy(src.data(), host.data(), n * 4);
  const std::vector<std::size_t> counts = {n};
  std::vector<float> out(n);

  comm.reduce_scatter(src.data(), dst.data(), counts, DType::kF32, *stream);
  stream->synchronize();
  device().copy(out.data(), dst.data(), n * 4);
  EXPECT_EQ(out, host);

  device().copy(dst.data(), std::vector<float>(n, 0.f).data(), n * 4);
  comm.all_gather(src.data(), dst.data(), counts, DType::kF32, *stream);
  comm.all_gather(dst.data(), dst.data(), counts, DType::kF32, *stream);  // in place
  stream->synchronize();
  device().copy(out.data(), dst.data(), n * 4);
  EXPECT_EQ(out, host);

  device().copy(dst.data(), std::vector<float>(n, 0.f).data(), n * 4);
  comm.all_reduce(src.data(), dst.data(), n, DType::kF32, ReduceOp::kMax, *stream);
  comm.all_reduce(dst.data(), dst.data(), n, DType::kF32, ReduceOp::kSum, *stream);
  comm.broadcast(dst.data(), n, DType::kF32, 0, *stream);
  comm.barrier(*stream);
  stream->synchronize();
  device().copy(out.data(), dst.data(), n * 4);
  EXPECT_EQ(out, host);

  EXPECT_NO_THROW(comm.verify_agreement(42, "config"));
  EXPECT_THROW(comm.broadcast(dst.data(), n, DType::kF32, 1, *stream), InvalidArgument);
  const std::vector<std::size_t> two = {1, 1};
  EXPECT_THROW(comm.reduce_scatter(src.data(), dst.data(), two, DType::kF32, *stream),
               InvalidArgument);
  // Overlapping send and recv that are not in place.
  EXPECT_THROW(
      comm.all_reduce(src.data(), src.as<float>() + 1, 4, DType::kF32, ReduceOp::kSum, *stream),
      InvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, SelfCommunicatorTest, ::zoro::testing::all_backend_specs(),
                         ::zoro::testing::backend_spec_name);

// A world of one has no one waiting: abort() returns and leaves the communicator usable (the
// caller exits on its own); MPI's and NCCL's end the job and cannot be tested in-process.
TEST(SelfCommunicator, AbortIsANoOp) {
  SelfCommunicator comm;
  comm.abort(3);
  EXPECT_NO_THROW(comm.verify_agreement(1, "after abort"));
}

TEST(ShardHelpers, OffsetsAndTotals) {
  const std::vector<std::size_t> counts = {5, 0, 7, 3};
  EXPECT_EQ(shard_offset(counts, 0), 0u);
  EXPECT_EQ(shard_offset(counts, 2), 5u);
  EXPECT_EQ(shard_offset(counts, 4), 15u);
  EXPECT_EQ(total_count(counts), 15u);
  EXPECT_THROW((void)shard_offset(counts, 5), InvalidArgument);
  const std::vector<std::uint64_t> agree = {1, 1, 1};
  EXPECT_EQ(detail::describe_disagreement(agree), "");
  const std::vector<std::uint64_t> disagree = {1, 1, 2, 3};
  const std::string text = detail::describe_disagreement(disagree);
  EXPECT_NE(text.find("rank(s) 2, 3 disagree"), std::string::npos) << text;
}

}  // namespace
}  // namespace zoro::comm

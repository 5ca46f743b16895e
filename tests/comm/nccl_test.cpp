// NcclCommunicator with one rank, against the same reference as the host backend's tests.
// Skips visibly without a GPU (or in a build without NCCL).
#include <gtest/gtest.h>

#include <vector>

#include "comm/communicator.h"
#include "runtime/base/half.h"
#include "runtime/device/device.h"
#if ZORO_HAS_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace zoro::comm {
namespace {

TEST(NcclCommunicator, OneRankCollectivesMatchTheReference) {
#if !ZORO_HAS_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  if (device::cuda_device_count() == 0) GTEST_SKIP() << device::cuda_unavailable_reason();
  auto dev = device::open_device("cuda:0:mem=64MiB");
  auto stream = dev->create_stream();
  NcclCommunicator comm(*dev, 0, 1, 0, NcclCommunicator::new_unique_id(), {});
  EXPECT_EQ(comm.size(), 1);
  EXPECT_STREQ(comm.backend_name(), "nccl");
  const std::size_t n = 4099;
  std::vector<float> host(n);
  for (std::size_t i = 0; i < n; ++i) host[i] = static_cast<float>(static_cast<int>(i % 129) - 64);
  auto src = dev->allocate(device::MemoryKind::kDevice, n * 4);
  auto dst = dev->allocate(device::MemoryKind::kDevice, n * 4);
  dev->copy(src.data(), host.data(), n * 4);
  const std::vector<std::size_t> counts = {n};
  std::vector<float> out(n);

  comm.reduce_scatter(src.data(), dst.data(), counts, DType::kF32, *stream);
  stream->synchronize();
  dev->copy(out.data(), dst.data(), n * 4);
  EXPECT_EQ(out, host);

  comm.all_reduce(src.data(), dst.data(), n, DType::kF32, ReduceOp::kMax, *stream);
  comm.all_reduce(dst.data(), dst.data(), n, DType::kF32, ReduceOp::kSum, *stream);
  comm.all_gather(dst.data(), dst.data(), counts, DType::kF32, *stream);
  comm.broadcast(dst.data(), n, DType::kF32, 0, *stream);
  comm.barrier(*stream);
  stream->synchronize();
  dev->copy(out.data(), dst.data(), n * 4);
  EXPECT_EQ(out, host);

  // bf16 round trip through the reduction (one rank: the sum is the input, exactly).
  std::vector<std::uint16_t> half(n);
  for (std::size_t i = 0; i < n; ++i) half[i] = float_to_bf16(host[i] * 0.01f);
  dev->copy(src.data(), half.data(), n * 2);
  comm.all_reduce(src.data(), dst.data(), n, DType::kBF16, ReduceOp::kSum, *stream);
  stream->synchronize();
  std::vector<std::uint16_t> half_out(n);
  dev->copy(half_out.data(), dst.data(), n * 2);
  EXPECT_EQ(half_out, half);
  comm.verify_agreement(1, "config");
#endif
}

}  // namespace
}  // namespace zoro::comm

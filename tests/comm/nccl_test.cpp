// NcclCommunicator with one rank, against the same reference as the host backend's tests;
// and with one rank per GPU (threads as ranks, up to 4), the uneven shards of Note [NCCL
// uneven shards] (a zero count included), in and out of place, fp32 and bf16. Skips visibly
// without a GPU, with fewer than two GPUs for the multi-rank test, or in a build without NCCL.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "runtime/base/half.h"
#include "runtime/device/device.h"
#if ZORO_HAS_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace zoro::comm {
namespace {

#if ZORO_HAS_NCCL
// Element i of rank q's contribution: small integers, so that sums over up to 4 ranks are
// exact in bf16 as in fp32 (and the reduction order cannot show).
float contribution(int q, std::size_t i) {
  return static_cast<float>((q + 1) * (static_cast<int>(i % 7) - 3));
}

// `values` encoded as `dtype`'s bytes.
std::vector<std::byte> encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> out(values.size() * size_of(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + i * 4, &values[i], 4);
    } else {
      const std::uint16_t bits = float_to_bf16(values[i]);
      std::memcpy(out.data() + i * 2, &bits, 2);
    }
  }
  return out;
}

// One rank's checks of reduce_scatter and all_gather (out of place and in place) over `counts`,
// on its own GPU. Elements past each result are sentinels that must survive.
void uneven_rank(const std::string& label, int rank, const std::vector<std::size_t>& counts,
                 const std::vector<std::uint8_t>& id) {
  const int size = static_cast<int>(counts.size());
  auto dev = device::open_device("cuda:" + std::to_string(rank) + ":mem=64MiB");
  auto stream = dev->create_stream();
  NcclCommunicator comm(*dev, rank, size, rank, id, [](std::uint64_t, std::string_view) {});
  const std::size_t total = total_count(counts);
  const std::size_t mine = counts[static_cast<std::size_t>(rank)];
  const std::size_t offset = shard_offset(counts, rank);
  constexpr std::size_t kGuard = 5;  // sentinel elements after every result
  const float sentinel = -77.f;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(label + " " + to_string(dtype) + " rank " + std::to_string(rank));
    const std::size_t esize = size_of(dtype);
    auto send = dev->allocate(device::MemoryKind::kDevice, total * esize);
    auto recv = dev->allocate(device::MemoryKind::kDevice, (total + kGuard) * esize);
    auto upload = [&](device::Buffer& to, const std::vector<float>& values) {
      const auto bytes = encode(values, dtype);
      dev->copy(to.data(), bytes.data(), bytes.size());
    };
    auto download = [&](const device::Buffer& from, std::size_t elems) {
      std::vector<std::byte> bytes(elems * esize);
      dev->copy(bytes.data(), from.data(), bytes.size());
      return bytes;
    };

    // reduce_scatter: this rank's shard of the sum, nothing written past it.
    std::vector<float> full(total);
    for (std::size_t i = 0; i < total; ++i) full[i] = contribution(rank, i);
    upload(send, full);
    upload(recv, std::vector<float>(total + kGuard, sentinel));
    comm.reduce_scatter(send.data(), recv.data(), counts, dtype, *stream);
    stream->synchronize();
    std::vector<float> expect(mine + kGuard, sentinel);
    for (std::size_t i = 0; i < mine; ++i) {
      float sum = 0;
      for (int q = 0; q < size; ++q) sum += contribution(q, offset + i);
      expect[i] = sum;
    }
    EXPECT_EQ(download(recv, mine + kGuard), encode(expect, dtype)) << "reduce_scatter";

    // The gathered buffer: shard r holds rank r's values.
    std::vector<float> gathered(total + kGuard, sentinel);
    for (int r = 0; r < size; ++r) {
      const std::size_t at = shard_offset(counts, r);
      for (std::size_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i) {
        gathered[at + i] = static_cast<float>(16 * r) + static_cast<float>(i % 16);
      }
    }
    const std::vector<float> own(gathered.begin() + static_cast<std::ptrdiff_t>(offset),
                                 gathered.begin() + static_cast<std::ptrdiff_t>(offset + mine));

    // all_gather out of place: from a separate shard buffer.
    auto shard = dev->allocate(device::MemoryKind::kDevice, std::max<std::size_t>(mine, 1) * esize);
    if (mine > 0) upload(shard, own);
    upload(recv, std::vector<float>(total + kGuard, sentinel));
    comm.all_gather(mine > 0 ? shard.data() : nullptr, recv.data(), counts, dtype, *stream);
    stream->synchronize();
    EXPECT_EQ(download(recv, total + kGuard), encode(gathered, dtype)) << "all_gather";

    // all_gather in place: this rank's shard already sits in the full buffer.
    std::vector<float> before(total + kGuard, sentinel);
    std::copy(own.begin(), own.end(), before.begin() + static_cast<std::ptrdiff_t>(offset));
    upload(recv, before);
    comm.all_gather(recv.as<std::byte>() + offset * esize, recv.data(), counts, dtype, *stream);
    stream->synchronize();
    EXPECT_EQ(download(recv, total + kGuard), encode(gathered, dtype)) << "all_gather in place";
  }
}

// Runs uneven_rank on one thread per rank (one GPU each). A rank that throws reports its error
// here; its peers may then wait in a collective it never joins (ctest's timeout ends that).
void run_uneven(const std::string& label, const std::vector<std::size_t>& counts) {
  const auto id = NcclCommunicator::new_unique_id();
  std::vector<std::thread> ranks;
  std::vector<std::string> errors(counts.size());
  for (std::size_t r = 0; r < counts.size(); ++r) {
    ranks.emplace_back([&, r] {
      try {
        uneven_rank(label, static_cast<int>(r), counts, id);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (std::size_t r = 0; r < counts.size(); ++r) {
    EXPECT_TRUE(errors[r].empty()) << label << ", rank " << r << ": " << errors[r];
  }
}
#endif

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

TEST(NcclCommunicator, UnevenShardsAcrossRanks) {
#if !ZORO_HAS_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  const int gpus = device::cuda_device_count();
  if (gpus < 2) {
    GTEST_SKIP() << "needs two GPUs (one NCCL rank per GPU), found " << gpus
                 << (gpus == 0 ? ": " + device::cuda_unavailable_reason() : std::string());
  }
  const int size = std::min(gpus, 4);
  // Uneven with a zero count (rank 1) and one rank owning most of the buffer.
  std::vector<std::size_t> counts = {1031, 0};
  for (int r = 2; r < size; ++r) counts.push_back(static_cast<std::size_t>(7 * r + 2));
  run_uneven("uneven", counts);
  // Equal counts: ncclReduceScatter / ncclAllGather on the caller's buffers.
  run_uneven("equal", std::vector<std::size_t>(static_cast<std::size_t>(size), 513));
  // The last rank's shard empty (its offset is the end of the buffer).
  std::vector<std::size_t> tail(static_cast<std::size_t>(size), 64);
  tail.back() = 0;
  run_uneven("last empty", tail);
#endif
}

}  // namespace
}  // namespace zoro::comm

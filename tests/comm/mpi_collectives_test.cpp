// MpiCommunicator under mpirun -np 2, 3, 4 (tests/comm/CMakeLists.txt), on the host backend.
//
// Every rank derives every rank's input from one seed (rank 0's test seed, broadcast) and the
// rank, so each rank computes the whole reference itself and checks its own result against
// it. fp32 inputs are small integers, whose sums are exact in any reduction order, so fp32
// results are compared exactly. 16-bit results are compared with one unit in the last place
// of the 16-bit type (2^-7 relative for bf16, 2^-10 for fp16), which covers the single
// rounding of Note [16-bit reductions] plus fp32 reduction-order differences.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/mpi/mpi_communicator.h"
#include "runtime/base/error.h"
#include "runtime/base/half.h"
#include "tests/support/random.h"

namespace zoro::comm {
namespace {

using device::Buffer;
using device::MemoryKind;

std::uint64_t shared_seed() {
  std::uint64_t seed = ::zoro::testing::test_seed();
  EXPECT_EQ(MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), MPI_SUCCESS);
  return seed;
}

// Rank `rank`'s input of `n` elements for the test `salt`, as fp32 values: small integers in
// [-64, 64] for fp32 (exact sums), uniform in [-1, 1] for the 16-bit types (already rounded to
// the type, so that widening is exact).
std::vector<float> rank_values(std::uint64_t seed, std::uint64_t salt, int rank, std::size_t n,
                               DType dtype) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(salt), static_cast<std::uint32_t>(rank)};
  std::mt19937_64 rng(seq);
  std::vector<float> out(n);
  if (dtype == DType::kF32) {
    std::uniform_int_distribution<int> dist(-64, 64);
    for (auto& v : out) v = static_cast<float>(dist(rng));
  } else {
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    for (auto& v : out) {
      v = dtype == DType::kBF16 ? bf16_to_float(float_to_bf16(dist(rng)))
                                : fp16_to_float(float_to_fp16(dist(rng)));
    }
  }
  return out;
}

std::vector<std::byte> encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * size_of(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else {
      const std::uint16_t h =
          dtype == DType::kBF16 ? float_to_bf16(values[i]) : float_to_fp16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(const std::vector<std::byte>& bytes, DType dtype) {
  const std::size_t n = bytes.size() / size_of(dtype);
  std::vector<float> values(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&values[i], bytes.data() + 4 * i, 4);
    } else {
      std::uint16_t h = 0;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      values[i] = dtype == DType::kBF16 ? bf16_to_float(h) : fp16_to_float(h);
    }
  }
  return values;
}

float tolerance(DType dtype, double ref) {
  switch (dtype) {
    case DType::kF32:
      return 0.f;
    case DType::kBF16:
      return static_cast<float>(std::ldexp(std::fabs(ref), -7) + 1e-6);
    case DType::kF16:
      return static_cast<float>(std::ldexp(std::fabs(ref), -10) + 1e-6);
  }
  return 0.f;
}

class MpiCollectives : public ::testing::Test {
 protected:
  void SetUp() override {
    device_ = device::open_device("host:mem=64MiB");
    stream_ = device_->create_stream({.name = "comm"});
    comm_ = std::make_unique<MpiCommunicator>(MpiEnvironment::acquire());
    seed_ = shared_seed();
  }
  void TearDown() override {
    if (stream_) stream_->synchronize();
    comm_.reset();
    stream_.reset();
    device_.reset();
  }

  // A device buffer holding `bytes` (at least one byte, so that empty shards still get a
  // valid pointer).
  Buffer upload(const std::vector<std::byte>& bytes) {
    Buffer buf = device_->allocate(MemoryKind::kDevice, std::max<std::size_t>(bytes.size(), 1));
    if (!bytes.empty()) device_->copy(buf.data(), bytes.data(), bytes.size());
    return buf;
  }
  std::vector<std::byte> download(const Buffer& buf, std::size_t bytes) {
    std::vector<std::byte> out(bytes);
    if (bytes > 0) device_->copy(out.data(), buf.data(), bytes);
    return out;
  }
  Buffer scratch(std::size_t bytes) {
    return device_->allocate(MemoryKind::kDevice, std::max<std::size_t>(bytes, 1));
  }

  std::vector<std::size_t> uneven_counts(std::size_t base) const {
    std::vector<std::size_t> counts;
    for (int r = 0; r < comm_->size(); ++r)
      counts.push_back(base + 7 * static_cast<std::size_t>(r));
    return counts;
  }

  std::unique_ptr<device::Device> device_;
  std::unique_ptr<device::Stream> stream_;
  std::unique_ptr<MpiCommunicator> comm_;
  std::uint64_t seed_ = 0;
};

TEST_F(MpiCollectives, RankSizeAndLocalRank) {
  int world_rank = -1, world_size = -1;
  ASSERT_EQ(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), MPI_SUCCESS);
  ASSERT_EQ(MPI_Comm_size(MPI_COMM_WORLD, &world_size), MPI_SUCCESS);
  EXPECT_EQ(comm_->rank(), world_rank);
  EXPECT_EQ(comm_->size(), world_size);
  // Every rank of these tests runs on this one machine.
  EXPECT_EQ(comm_->local_rank(), world_rank);
  EXPECT_STREQ(comm_->backend_name(), "mpi");
  if (world_size > 1) {
    EXPECT_TRUE(launched_by_mpi());
  }
}

// Under mpirun, the bootstrap picks MPI for a host device, with MPI's rank and size.
TEST_F(MpiCollectives, BootstrapPicksMpiOnTheHostBackend) {
  if (comm_->size() == 1) GTEST_SKIP() << "not launched by mpirun";
  EXPECT_EQ(detect_launch(), LaunchKind::kMpi);
  auto comm = make_communicator(*device_);
  EXPECT_STREQ(comm->backend_name(), "mpi");
  EXPECT_EQ(comm->rank(), comm_->rank());
  EXPECT_EQ(comm->size(), comm_->size());
  EXPECT_EQ(comm->local_rank(), local_rank_from_environment());
  float one = 1.f;
  Buffer buf = upload(std::vector<std::byte>(reinterpret_cast<std::byte*>(&one),
                                             reinterpret_cast<std::byte*>(&one) + 4));
  comm->all_reduce(buf.data(), buf.data(), 1, DType::kF32, ReduceOp::kSum, *stream_);
  stream_->synchronize();
  EXPECT_EQ(decode(download(buf, 4), DType::kF32)[0], static_cast<float>(comm_->size()));
  comm->verify_agreement(99, "config");
}

class MpiCollectivesDType : public MpiCollectives, public ::testing::WithParamInterface<DType> {};

TEST_P(MpiCollectivesDType, ReduceScatterUnevenShards) {
  ZORO_TRACE_SEED();
  const DType dtype = GetParam();
  for (const std::size_t base : {std::size_t{1}, std::size_t{100}, std::size_t{4099}}) {
    const auto counts = uneven_counts(base);
    const std::size_t total = total_count(counts);
    const int me = comm_->rank();
    Buffer send = upload(encode(rank_values(seed_, base, me, total, dtype), dtype));
    const std::size_t mine = counts[static_cast<std::size_t>(me)];
    Buffer recv = scratch(mine * size_of(dtype));
    comm_->reduce_scatter(send.data(), recv.data(), counts, dtype, *stream_);
    stream_->synchronize();
    const auto got = decode(download(recv, mine * size_of(dtype)), dtype);

    std::vector<double> ref(mine, 0.0);
    const std::size_t offset = shard_offset(counts, me);
    for (int r = 0; r < comm_->size(); ++r) {
      const auto values = rank_values(seed_, base, r, total, dtype);
      for (std::size_t i = 0; i < mine; ++i) ref[i] += values[offset + i];
    }
    for (std::size_t i = 0; i < mine; ++i) {
      ASSERT_NEAR(got[i], ref[i], tolerance(dtype, ref[i]))
          << to_string(dtype) << " base " << base << " element " << i;
    }
  }
}

TEST_P(MpiCollectivesDType, AllReduceSumAndMax) {
  ZORO_TRACE_SEED();
  const DType dtype = GetParam();
  const std::size_t n = 1031;
  const int me = comm_->rank();
  for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    const auto mine = rank_values(seed_, 7, me, n, dtype);
    Buffer send = upload(encode(mine, dtype));
    Buffer recv = scratch(n * size_of(dtype));
    Buffer inplace = upload(encode(mine, dtype));
    comm_->all_reduce(send.data(), recv.data(), n, dtype, op, *stream_);
    comm_->all_reduce(inplace.data(), inplace.data(), n, dtype, op, *stream_);
    stream_->synchronize();
    const auto got = decode(download(recv, n * size_of(dtype)), dtype);
    const auto got_inplace = decode(download(inplace, n * size_of(dtype)), dtype);

    std::vector<double> ref(n, op == ReduceOp::kSum ? 0.0 : -1e30);
    for (int r = 0; r < comm_->size(); ++r) {
      const auto values = rank_values(seed_, 7, r, n, dtype);
      for (std::size_t i = 0; i < n; ++i) {
        ref[i] = op == ReduceOp::kSum ? ref[i] + values[i] : std::max<double>(ref[i], values[i]);
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      // A max is one of the inputs: exact for every type.
      const float tol = op == ReduceOp::kMax ? 0.f : tolerance(dtype, ref[i]);
      ASSERT_NEAR(got[i], ref[i], tol) << to_string(dtype) << " " << to_string(op) << " " << i;
      ASSERT_EQ(got_inplace[i], got[i]) << "in place differs at " << i;
    }
  }
}

TEST_P(MpiCollectivesDType, AllGatherUnevenShardsAndInPlace) {
  ZORO_TRACE_SEED();
  const DType dtype = GetParam();
  const std::size_t esize = size_of(dtype);
  const auto counts = uneven_counts(33);
  const std::size_t total = total_count(counts);
  const int me = comm_->rank();
  const std::size_t mine = counts[static_cast<std::size_t>(me)];
  const std::size_t offset = shard_offset(counts, me);

  std::vector<float> expected;
  for (int r = 0; r < comm_->size(); ++r) {
    const auto shard = rank_values(seed_, 11, r, counts[static_cast<std::size_t>(r)], dtype);
    expected.insert(expected.end(), shard.begin(), shard.end());
  }
  Buffer send = upload(encode(rank_values(seed_, 11, me, mine, dtype), dtype));
  Buffer recv = scratch(total * esize);
  comm_->all_gather(send.data(), recv.data(), counts, dtype, *stream_);

  // In place: this rank's shard already sits in the full buffer; the rest is garbage.
  std::vector<float> full_garbage(total, -999.f);
  std::copy_n(expected.begin() + static_cast<std::ptrdiff_t>(offset), mine,
              full_garbage.begin() + static_cast<std::ptrdiff_t>(offset));
  Buffer full = upload(encode(full_garbage, dtype));
  comm_->all_gather(full.as<std::byte>() + offset * esize, full.data(), counts, dtype, *stream_);
  stream_->synchronize();

  EXPECT_EQ(decode(download(recv, total * esize), dtype), expected);
  EXPECT_EQ(decode(download(full, total * esize), dtype), expected);
}

TEST_P(MpiCollectivesDType, BroadcastFromEveryRoot) {
  ZORO_TRACE_SEED();
  const DType dtype = GetParam();
  const std::size_t n = 517;
  for (int root = 0; root < comm_->size(); ++root) {
    Buffer buf = upload(encode(rank_values(seed_, 13, comm_->rank(), n, dtype), dtype));
    comm_->broadcast(buf.data(), n, dtype, root, *stream_);
    stream_->synchronize();
    EXPECT_EQ(decode(download(buf, n * size_of(dtype)), dtype),
              rank_values(seed_, 13, root, n, dtype))
        << "root " << root;
  }
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, MpiCollectivesDType,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& p) {
                           return std::string(to_string(p.param));
                         });

TEST_F(MpiCollectives, ReduceScatterWithEmptyShards) {
  ZORO_TRACE_SEED();
  // Rank 0 and the last rank own nothing; every other rank owns 3 elements (the tail of a
  // flat buffer that does not divide evenly gives such shapes).
  std::vector<std::size_t> counts(static_cast<std::size_t>(comm_->size()), 3);
  counts.front() = 0;
  counts.back() = 0;
  const std::size_t total = total_count(counts);
  const int me = comm_->rank();
  const std::size_t mine = counts[static_cast<std::size_t>(me)];
  Buffer send = upload(encode(rank_values(seed_, 17, me, total, DType::kF32), DType::kF32));
  Buffer recv = scratch(mine * 4);
  comm_->reduce_scatter(send.data(), recv.data(), counts, DType::kF32, *stream_);
  stream_->synchronize();
  const auto got = decode(download(recv, mine * 4), DType::kF32);
  const std::size_t offset = shard_offset(counts, me);
  for (std::size_t i = 0; i < mine; ++i) {
    float ref = 0.f;
    for (int r = 0; r < comm_->size(); ++r)
      ref += rank_values(seed_, 17, r, total, DType::kF32)[offset + i];
    EXPECT_EQ(got[i], ref) << i;
  }
}

// Note [16-bit reductions]: 256 plus (N-1) ones. Summed in bf16 step by step, every partial
// 257 rounds back to 256 (bf16 spacing is 2 there), so a 16-bit accumulation gives 256 for
// any N; accumulated in fp32 and rounded once, it gives round_bf16(255 + N).
TEST_F(MpiCollectives, Bf16SumsAccumulateInFp32) {
  const float mine = comm_->rank() == 0 ? 256.f : 1.f;
  std::vector<float> values(64, mine);
  Buffer buf = upload(encode(values, DType::kBF16));
  comm_->all_reduce(buf.data(), buf.data(), values.size(), DType::kBF16, ReduceOp::kSum, *stream_);
  stream_->synchronize();
  const float expected = bf16_to_float(float_to_bf16(255.f + static_cast<float>(comm_->size())));
  for (const float v : decode(download(buf, values.size() * 2), DType::kBF16)) {
    ASSERT_EQ(v, expected);
  }
}

// A copy enqueued before the collective on the same stream is seen by it, and a copy enqueued
// after it sees its result: the collective is a task of the stream, not a side channel.
TEST_F(MpiCollectives, OrderedWithCopiesOnTheSameStream) {
  const std::size_t n = 4096;
  Buffer pinned_in = device_->allocate(MemoryKind::kPinnedHost, n * 4);
  Buffer pinned_out = device_->allocate(MemoryKind::kPinnedHost, n * 4);
  Buffer dev = scratch(n * 4);
  for (std::size_t i = 0; i < n; ++i) {
    pinned_in.as<float>()[i] = static_cast<float>(comm_->rank() + 1);
    pinned_out.as<float>()[i] = -1.f;
  }
  device_->copy(dev.data(), std::vector<float>(n, 1000.f).data(), n * 4);  // stale contents
  // A slow task first, so that the copy and the collective are certainly still queued when
  // the host returns: without stream order the collective would read the stale 1000s.
  stream_->launch_host_fn("hold", [] {
    volatile double x = 0;
    for (int i = 0; i < 200000; ++i) x = x + 1.0;
  });
  stream_->copy_async(dev.data(), pinned_in.data(), n * 4);
  comm_->all_reduce(dev.data(), dev.data(), n, DType::kF32, ReduceOp::kSum, *stream_);
  stream_->copy_async(pinned_out.data(), dev.data(), n * 4);
  stream_->synchronize();
  const int size = comm_->size();
  const float expected = static_cast<float>(size * (size + 1) / 2);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(pinned_out.as<float>()[i], expected) << i;
}

TEST_F(MpiCollectives, BarrierCompletes) {
  for (int i = 0; i < 5; ++i) comm_->barrier(*stream_);
  stream_->synchronize();
}

TEST_F(MpiCollectives, VerifyAgreement) {
  EXPECT_NO_THROW(comm_->verify_agreement(0x1234, "config fingerprint"));
  if (comm_->size() == 1) return;  // nobody to disagree with
  const int last = comm_->size() - 1;
  const std::uint64_t fp = comm_->rank() == last ? 0xBAD : 0x1234;
  try {
    comm_->verify_agreement(fp, "model fingerprint");
    ADD_FAILURE() << "disagreement not detected";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model fingerprint"), std::string::npos) << what;
    EXPECT_NE(what.find("rank(s) " + std::to_string(last) + " disagree"), std::string::npos)
        << what;
  }
}

TEST_F(MpiCollectives, BadArgumentsThrowAtTheCallOnEveryRank) {
  Buffer a = scratch(64);
  Buffer b = scratch(64);
  std::vector<std::size_t> wrong(static_cast<std::size_t>(comm_->size()) + 1, 1);
  EXPECT_THROW(comm_->reduce_scatter(a.data(), b.data(), wrong, DType::kF32, *stream_),
               InvalidArgument);
  EXPECT_THROW(comm_->all_gather(a.data(), b.data(), wrong, DType::kF32, *stream_),
               InvalidArgument);
  EXPECT_THROW(comm_->broadcast(a.data(), 4, DType::kF32, comm_->size(), *stream_),
               InvalidArgument);
  EXPECT_THROW(
      comm_->all_reduce(a.data(), a.as<std::byte>() + 4, 4, DType::kF32, ReduceOp::kSum, *stream_),
      InvalidArgument);
  // Nothing was enqueued, so the stream is still usable by all ranks in step.
  comm_->barrier(*stream_);
  stream_->synchronize();
}

}  // namespace
}  // namespace zoro::comm

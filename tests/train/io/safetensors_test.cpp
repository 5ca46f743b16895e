// safetensors: round trips of random tensors of every dtype, and every kind of bad file.
#include "examples/zoro_train/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "runtime/base/error.h"
#include "runtime/base/half.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

using testing::TempDir;

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<float> values;       // what read_as_f32 must give
  std::vector<std::byte> encoded;  // the bytes on disk
};

Tensor random_tensor(std::mt19937_64& rng, std::string name, DType dtype,
                     std::vector<std::int64_t> shape) {
  Tensor t{std::move(name), dtype, std::move(shape), {}, {}};
  std::size_t n = 1;
  for (auto d : t.shape) n *= static_cast<std::size_t>(d);
  const auto raw = zoro::testing::random_floats(rng, n, -100.f, 100.f);
  t.encoded.resize(n * size_of(dtype));
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::kF32) {
      t.values.push_back(raw[i]);
      std::memcpy(t.encoded.data() + 4 * i, &raw[i], 4);
    } else {
      const std::uint16_t h = dtype == DType::kF16 ? float_to_fp16(raw[i]) : float_to_bf16(raw[i]);
      t.values.push_back(dtype == DType::kF16 ? fp16_to_float(h) : bf16_to_float(h));
      std::memcpy(t.encoded.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

TEST(Safetensors, RoundTripsRandomTensorsOfEachDtype) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(40);
  const auto dim = [&] { return static_cast<std::int64_t>(1 + rng() % 7); };
  std::vector<Tensor> tensors;
  tensors.push_back(random_tensor(rng, "wte.weight", DType::kF32, {dim(), dim()}));
  tensors.push_back(random_tensor(rng, "h.0.ln_1.bias", DType::kF16, {dim()}));
  tensors.push_back(random_tensor(rng, "h.0.attn.c_attn.weight", DType::kBF16, {dim(), dim(), 3}));
  tensors.push_back(random_tensor(rng, "scalar", DType::kF32, {}));
  tensors.push_back(random_tensor(rng, "empty", DType::kBF16, {0, 5}));
  std::vector<TensorView> views;
  for (const Tensor& t : tensors) views.push_back({t.name, t.dtype, t.shape, t.encoded});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "42"}};

  const TempDir dir;
  const std::string path = dir.file("w.safetensors");
  write_safetensors(path, views, meta);
  // The data starts 8-byte aligned; the header padding is spaces.
  std::uint64_t n = 0;
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    EXPECT_EQ((8 + n) % 8, 0u);
    EXPECT_EQ(header.find_first_not_of(' ', header.rfind('}') + 1), std::string::npos);
  }

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const Tensor& t : tensors) {
    const TensorInfo* info = f.find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype);
    EXPECT_EQ(info->shape, t.shape);
    EXPECT_EQ(info->numel, t.values.size());
    const auto bytes = f.bytes(*info);
    ASSERT_EQ(bytes.size(), t.encoded.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), t.encoded.begin())) << t.name;
    EXPECT_EQ(f.read_as_f32(t.name), t.values) << t.name;
  }
  EXPECT_EQ(f.find("nope"), nullptr);
  ZORO_EXPECT_ERROR(InvalidArgument, f.read_as_f32("nope"), "has no tensor 'nope'");
  // Rewriting replaces the file whole.
  write_safetensors(path, std::span(views).first(1));
  EXPECT_EQ(SafetensorsFile::open(path).tensors().size(), 1u);
  EXPECT_TRUE(SafetensorsFile::open(path).metadata().empty());
}

// A file from a header text and `data_bytes` of zeros; `length` overrides the header length.
std::string write_raw(const TempDir& dir, const std::string& header, std::size_t data_bytes,
                      std::optional<std::uint64_t> length = std::nullopt) {
  const std::string path = dir.file("raw.safetensors");
  std::string contents(8, '\0');
  const std::uint64_t n = length.value_or(header.size());
  std::memcpy(contents.data(), &n, 8);
  contents += header;
  contents.append(data_bytes, '\0');
  testing::write_text(path, contents);
  return path;
}

TEST(Safetensors, RejectsBadFilesWithClearErrors) {
  const TempDir dir;
  const auto open = [&](const std::string& header, std::size_t data,
                        std::optional<std::uint64_t> length = std::nullopt) {
    return SafetensorsFile::open(write_raw(dir, header, data, length));
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  EXPECT_NO_THROW(open(ok, 24));

  ZORO_EXPECT_ERROR(IoError, SafetensorsFile::open(dir.file("none.safetensors")),
                    "none.safetensors");
  testing::write_text(dir.file("tiny"), "abc");
  ZORO_EXPECT_ERROR(IoError, SafetensorsFile::open(dir.file("tiny")),
                    "truncated: 3 bytes, less than the 8-byte header length");
  ZORO_EXPECT_ERROR(IoError, open(ok, 24, ok.size() + 100),
                    "truncated: the header claims " + std::to_string(ok.size() + 100));
  ZORO_EXPECT_ERROR(IoError, open(ok, 20), "are not inside the 20 bytes of data");
  ZORO_EXPECT_ERROR(IoError, open(ok, 0, 1ull << 40), "exceeds the limit of 104857600 bytes");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"F32",)", 0), "the header is not valid JSON");
  ZORO_EXPECT_ERROR(IoError, open("[1,2]", 0), "the header is not a JSON object");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                    "tensor 'a': holds 8 bytes, but shape [3] of F32 needs 12");
  ZORO_EXPECT_ERROR(IoError,
                    open(R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}})",
                         10),
                    "tensors 'a' [0, 8) and 'b' [6, 10) overlap");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
                    "\"data_offsets\" [8, 4] are not inside");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                    "tensor 'a': \"shape\" [-1] has an entry that is not a non-negative integer");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"F32","shape":[1]}})", 4),
                    "tensor 'a': no \"data_offsets\"");
  ZORO_EXPECT_ERROR(IoError, open(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", 4),
                    "tensor 'a': unknown dtype 'Q7'");
  ZORO_EXPECT_ERROR(Unsupported,
                    open(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
                    "tensor 'w' has dtype F64; zoro reads F32, F16 and BF16");
  ZORO_EXPECT_ERROR(IoError, open(R"({"__metadata__":{"k":1}})", 0),
                    "__metadata__ key 'k' is not a string");
  ZORO_EXPECT_ERROR(IoError,
                    open(R"({"a":{"dtype":"F32","shape":[4611686018427387904,8],)"
                         R"("data_offsets":[0,4]}})",
                         4),
                    "overflows");
}

TEST(Safetensors, RefusesBadTensorsToWrite) {
  const TempDir dir;
  const std::string path = dir.file("out.safetensors");
  const std::vector<std::byte> bytes(12);
  const auto write = [&](std::vector<TensorView> views) { write_safetensors(path, views); };
  ZORO_EXPECT_ERROR(InvalidArgument, write({{"a", DType::kF32, {2}, bytes}}),
                    "tensor 'a' has 12 bytes, its shape of F32 needs 8");
  ZORO_EXPECT_ERROR(InvalidArgument,
                    write({{"a", DType::kF32, {3}, bytes}, {"a", DType::kF16, {6}, bytes}}),
                    "tensor 'a' appears twice");
  ZORO_EXPECT_ERROR(InvalidArgument, write({{"__metadata__", DType::kF32, {3}, bytes}}),
                    "is not allowed");
  ZORO_EXPECT_ERROR(InvalidArgument, write({{"a", DType::kF32, {-3}, bytes}}), "dimension -3");
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing half-written is left
  ZORO_EXPECT_ERROR(IoError, write_safetensors(dir.file("no/such/dir/x.safetensors"), {}),
                    "no/such/dir");
}

}  // namespace
}  // namespace zoro::train

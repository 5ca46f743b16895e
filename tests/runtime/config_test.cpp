#include "runtime/config.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/base/error.h"
#include "runtime/base/units.h"

namespace zoro {
namespace {

TEST(Config, DefaultsAreValid) {
  Config c;
  EXPECT_NO_THROW(c.validate());
  EXPECT_FALSE(c.uses_loss_scaling());
  EXPECT_GT(c.effective_host_budget(), 0u);
}

TEST(Config, ParsesEverySection) {
  const Config c = Config::from_toml(R"(
device = "host:mem=256MiB"
[precision]
dtype = "fp16"
grad_dtype = "fp16"
moments = "bf16"
[optimizer]
name = "adam"
lr = 3e-4
betas = [0.8, 0.95]
eps = 1e-6
weight_decay = 0.1
clip_norm = 0.5
[loss_scale]
init = 1024.0
growth_interval = 100
[offload]
bucket_bytes = "8MiB"
bucket_count = 3
grad_accum_steps = 4
dpu = true
dpu_warmup_steps = 2
host_budget = "1GiB"
cpu_threads = 2
chunk_elems = 65536
trace = true
)");
  EXPECT_EQ(c.device, "host:mem=256MiB");
  EXPECT_EQ(c.dtype, DType::kF16);
  EXPECT_EQ(c.moments, DType::kBF16);
  EXPECT_EQ(c.optimizer, OptimizerKind::kAdam);
  EXPECT_DOUBLE_EQ(c.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.clip_norm, 0.5);
  EXPECT_DOUBLE_EQ(c.loss_scale.init, 1024.0);
  EXPECT_EQ(c.loss_scale.growth_interval, 100);
  EXPECT_EQ(c.bucket_bytes, 8 * kMiB);
  EXPECT_EQ(c.bucket_count, 3);
  EXPECT_EQ(c.grad_accum_steps, 4);
  EXPECT_TRUE(c.dpu);
  EXPECT_EQ(c.host_budget_bytes, kGiB);
  EXPECT_EQ(c.chunk_elems, 65536u);
  EXPECT_TRUE(c.trace);
  EXPECT_TRUE(c.uses_loss_scaling());
}

TEST(Config, RoundTripsThroughToml) {
  Config c;
  c.lr = 1.25e-4;
  c.beta2 = 0.98;
  c.dpu = true;
  c.optimizer = OptimizerKind::kLion;
  const Config back = Config::from_toml(c.to_toml());
  EXPECT_EQ(back.to_toml(), c.to_toml());
  EXPECT_EQ(back.fingerprint(), c.fingerprint());
}

TEST(Config, FingerprintIgnoresPlacementButNotNumerics) {
  Config a, b;
  b.device = "host";
  b.cpu_threads = 7;
  b.trace = true;
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  b.lr *= 2;
  EXPECT_NE(a.fingerprint(), b.fingerprint());
}

void expect_error(const std::string& toml, const std::string& fragment) {
  try {
    (void)Config::from_toml(toml, "run.toml");
    ADD_FAILURE() << "accepted:\n" << toml;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << fragment;
  }
}

TEST(Config, BadInputNamesTheKeyAndValue) {
  expect_error("[optimizer]\nlr = -1.0\n", "optimizer.lr = -1");
  expect_error("[optimizer]\nlrr = 0.1\n", "unknown key 'optimizer.lrr'");
  expect_error("bogus = 1\n", "unknown key 'bogus'");
  expect_error("[optimizer]\nlr = \"fast\"\n", "optimizer.lr must be a number");
  expect_error("[optimizer]\nbetas = [0.9]\n", "optimizer.betas must be an array of two");
  expect_error("[optimizer]\nbetas = [0.9, 1.0]\n", "optimizer.betas[1] = 1");
  expect_error("[optimizer]\nname = \"sgd\"\n", "optimizer.name='sgd'");
  expect_error("[precision]\ndtype = \"int8\"\n", "precision.dtype='int8'");
  expect_error("[precision]\nmoments = \"fp16\"\n", "precision.moments = fp16");
  expect_error("[offload]\nbucket_bytes = \"12XB\"\n", "offload.bucket_bytes='12XB'");
  expect_error("[offload]\nbucket_count = 0\n", "offload.bucket_count = 0");
  expect_error("[offload]\ngrad_accum_steps = 0\n", "offload.grad_accum_steps = 0");
  expect_error("[offload]\nhost_budget = \"1000TiB\"\n", "exceeds this machine's physical memory");
  expect_error("[offload]\ndpu = 1\n", "offload.dpu must be true or false");
  expect_error("[offload]\nchunk_elems = -5\n", "offload.chunk_elems must be a positive integer");
  expect_error("[loss_scale]\nbackoff_factor = 2.0\n", "loss_scale.backoff_factor = 2");
  expect_error("[optimizer\nlr = 1\n", "run.toml:1:");  // a TOML syntax error, with line:col
}

TEST(Config, MissingFileIsAnIoError) {
  EXPECT_THROW((void)Config::from_file("/nonexistent/run.toml"), IoError);
}

}  // namespace
}  // namespace zoro

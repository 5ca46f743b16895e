// The optimizers' API: bad input is refused with an InvalidArgument that names the value,
// before anything is written; instruction-set selection; callbacks that throw.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "tests/offload/optim_test_util.h"

// ThreadSanitizer suppressions for oneTBB's own code: tests/support/sanitizer_options.cpp.

namespace zoro::optim::testing {
namespace {

// Runs f, expects InvalidArgument whose message contains `needle`.
template <class F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

class AdamBadInput : public ::testing::Test {
 protected:
  AdamBadInput() : p(Variant{Opt::kAdam, DType::kF16, DType::kF32, DType::kBF16}, 100, 0) {
    for (std::size_t i = 0; i < p.size(); ++i) p.master.set(i, 1.f);
  }
  AdamBuffers buffers() {
    return AdamBuffers{std::span<float>(p.master.f32(), p.size()), p.s1.tensor(), p.s2.tensor(),
                       p.grad.const_tensor(), p.half.tensor()};
  }
  void step(const AdamConfig& c, const StepInfo& info, const AdamBuffers& b,
            Range r = Range{0, 100}) {
    adam_step(ex, c, info, b, r);
  }
  CpuExecutor ex{CpuExecutor::Options{.threads = 1}};
  Problem p;
  StepInfo ok_step{1, 1.f};
};

TEST_F(AdamBadInput, HyperParametersOutOfRangeAreNamed) {
  auto with = [&](auto edit, const char* needle) {
    AdamConfig c;
    edit(c);
    expect_invalid([&] { step(c, ok_step, buffers()); }, needle);
  };
  with([](AdamConfig& c) { c.lr = -1e-3f; }, "lr=-0.001");
  with([](AdamConfig& c) { c.lr = std::numeric_limits<float>::infinity(); }, "lr=inf");
  with([](AdamConfig& c) { c.beta1 = 1.f; }, "beta1=1");
  with([](AdamConfig& c) { c.beta1 = -0.1f; }, "beta1=-0.1");
  with([](AdamConfig& c) { c.beta2 = 1.5f; }, "beta2=1.5");
  with([](AdamConfig& c) { c.eps = -1e-8f; }, "eps=-1e-08");
  with([](AdamConfig& c) { c.eps = std::nanf(""); }, "eps=nan");
  with([](AdamConfig& c) { c.weight_decay = -0.1f; }, "weight_decay=-0.1");
  expect_invalid([&] { step(AdamConfig{}, StepInfo{0, 1.f}, buffers()); }, "step=0");
  expect_invalid([&] { step(AdamConfig{}, StepInfo{-3, 1.f}, buffers()); }, "step=-3");
  expect_invalid([&] { step(AdamConfig{}, StepInfo{1, 0.f}, buffers()); }, "grad_scale=0");
  expect_invalid(
      [&] {
        step(AdamConfig{}, StepInfo{1, std::nanf("")}, buffers());
      },
      "grad_scale=nan");
}

TEST_F(AdamBadInput, BuffersAreCheckedAndNothingIsWritten) {
  AdamBuffers b = buffers();
  b.grad.elems = 99;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); },
                 "grad has 99 elements but master has 100");
  b = buffers();
  b.exp_avg_sq.elems = 101;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "exp_avg_sq has 101 elements");
  b = buffers();
  b.half_out.elems = 7;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "half_out has 7 elements");
  b = buffers();
  b.exp_avg.data = nullptr;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "exp_avg is null");
  b = buffers();
  b.grad.data = static_cast<const std::uint8_t*>(b.grad.data) + 1;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "grad at");
  b = buffers();
  b.exp_avg.data = static_cast<std::uint8_t*>(b.exp_avg.data) + 2;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "4-byte elements");
  b = buffers();
  b.exp_avg.dtype = DType::kF16;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "exp_avg has dtype fp16");
  b = buffers();
  b.exp_avg_sq = Tensor{p.s1.data(), 100, DType::kF32};  // the same memory as exp_avg
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "exp_avg and exp_avg_sq overlap");
  b = buffers();
  b.half_out.dtype = DType::kF32;
  expect_invalid([&] { step(AdamConfig{}, ok_step, b); }, "half_out has dtype fp32");
  expect_invalid(
      [&] {
        step(AdamConfig{}, ok_step, buffers(), Range{10, 101});
      },
      "range [10, 101) is not inside [0, 100)");
  expect_invalid([&] { step(AdamConfig{}, ok_step, buffers(), Range{50, 40}); }, "range [50, 40)");
  for (std::size_t i = 0; i < p.size(); ++i) {
    ASSERT_EQ(p.master.get(i), 1.f);
    ASSERT_EQ(p.s1.get(i), 0.f);
  }
}

TEST(OptimBadInput, AdagradAndLionCheckTheirOwnParameters) {
  CpuExecutor ex(CpuExecutor::Options{.threads = 1});
  Problem p(Variant{Opt::kLion, DType::kF32, DType::kF32, std::nullopt}, 10, 0);
  std::span<float> master(p.master.f32(), 10);
  expect_invalid(
      [&] {
        lion_step(ex, LionConfig{.beta1 = 1.1f}, StepInfo{1, 1.f},
                  LionBuffers{master, p.s1.tensor(), p.grad.const_tensor(), {}}, Range{0, 10});
      },
      "beta1=1.1");
  expect_invalid(
      [&] {
        lion_step(ex, LionConfig{}, StepInfo{0, 1.f},
                  LionBuffers{master, p.s1.tensor(), p.grad.const_tensor(), {}}, Range{0, 10});
      },
      "step=0");
  expect_invalid(
      [&] {
        adagrad_step(ex, AdagradConfig{.lr = -1.f}, StepInfo{1, 1.f},
                     AdagradBuffers{master, p.s1.tensor(), p.grad.const_tensor(), {}},
                     Range{0, 10});
      },
      "lr=-1");
  expect_invalid(
      [&] {
        adagrad_step(
            ex, AdagradConfig{}, StepInfo{1, 1.f},
            AdagradBuffers{master, Tensor{nullptr, 10, DType::kF32}, p.grad.const_tensor(), {}},
            Range{0, 10});
      },
      "state_sum is null");
}

TEST(OptimBadInput, ExecutorOptions) {
  expect_invalid([] { CpuExecutor ex(CpuExecutor::Options{.threads = -2}); }, "threads=-2");
  expect_invalid([] { CpuExecutor ex(CpuExecutor::Options{.numa_node = 4096}); }, "numa_node=4096");
  expect_invalid([] { CpuExecutor ex(CpuExecutor::Options{.grain_elems = 0}); }, "grain_elems");
}

TEST(OptimIsa, NamesRoundTripAndUnknownOrUnsupportedAreRefused) {
  for (Isa isa : all_isas()) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
  expect_invalid([] { parse_isa("sse2"); }, "'sse2'");
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(best_isa()));
  EXPECT_EQ(supported_isas().front(), Isa::kScalar);
  EXPECT_EQ(supported_isas().back(), best_isa());
  for (Isa isa : all_isas()) {
    if (isa_supported(isa)) {
      set_isa(isa);
      EXPECT_EQ(current_isa(), isa);
    } else {
      expect_invalid([&] { set_isa(isa); }, isa_name(isa));
    }
  }
  reset_isa();
  // Unless ZORO_CPU_ISA says otherwise, the best path is in force.
  const char* env = std::getenv("ZORO_CPU_ISA");
  if (env == nullptr || *env == '\0') {
    EXPECT_EQ(current_isa(), best_isa());
  }
}

// ZORO_CPU_ISA is read once per process, so each value is tried in a child process running
// the test below; its exit status says what it found.
TEST(OptimIsa, ChildReportsTheEnvironmentsChoice) {
  const char* env = std::getenv("ZORO_CPU_ISA");
  if (std::getenv("ZORO_TEST_ISA_CHILD") == nullptr) GTEST_SKIP() << "run by EnvironmentVariable";
  try {
    const Isa isa = current_isa();
    std::exit(env != nullptr && isa == parse_isa(env) ? 10 : 11);
  } catch (const InvalidArgument& e) {
    std::exit(std::string(e.what()).find("ZORO_CPU_ISA") != std::string::npos ? 12 : 13);
  }
}

TEST(OptimIsa, EnvironmentVariableForcesAPathAndRefusesUnknownNames) {
  auto child_status = [](const std::string& value) {
    std::string filter = "--gtest_filter=OptimIsa.ChildReportsTheEnvironmentsChoice";
    std::vector<char*> argv = {const_cast<char*>("/proc/self/exe"), filter.data(), nullptr};
    std::vector<std::string> env_strings = {"ZORO_CPU_ISA=" + value, "ZORO_TEST_ISA_CHILD=1"};
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      if (entry.rfind("ZORO_CPU_ISA=", 0) != 0) env_strings.push_back(entry);
    }
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()) != 0) {
      return -1;
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
  };
  for (Isa isa : supported_isas()) EXPECT_EQ(child_status(isa_name(isa)), 10) << isa_name(isa);
  EXPECT_EQ(child_status("avx1024"), 12);
  for (Isa isa : all_isas()) {
    if (!isa_supported(isa)) {
      EXPECT_EQ(child_status(isa_name(isa)), 12) << isa_name(isa);
    }
  }
}

TEST(OptimChunks, ACallbackThatThrowsStopsTheLaterChunks) {
  CpuExecutor ex(CpuExecutor::Options{.threads = 2, .grain_elems = 16});
  Problem p(Variant{Opt::kAdam, DType::kF32, DType::kF32, std::nullopt}, 1000, 0);
  for (std::size_t i = 0; i < p.size(); ++i) {
    p.master.set(i, 1.f);
    p.grad.set(i, 1.f);
  }
  int calls = 0;
  EXPECT_THROW(run_step(ex, p, Hyper{}, 1, Range{0, 1000}, 100,
                        [&](Range) {
                          if (++calls == 3) throw std::runtime_error("copy failed");
                        }),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  for (std::size_t i = 0; i < 300; ++i) ASSERT_NE(p.master.get(i), 1.f) << i;
  for (std::size_t i = 300; i < 1000; ++i) ASSERT_EQ(p.master.get(i), 1.f) << i;
}

TEST(OptimChunks, EmptyRangeCallsNothing) {
  CpuExecutor ex(CpuExecutor::Options{.threads = 2});
  Problem p(Variant{Opt::kAdam, DType::kF32, DType::kF32, std::nullopt}, 10, 0);
  int calls = 0;
  run_step(ex, p, Hyper{}, 1, Range{4, 4}, 3, [&](Range) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// Every thread that runs a body is bound to exactly one of the executor's PUs, and the caller
// gets its own affinity back afterwards.
TEST(OptimExecutor, BodiesRunPinnedAndTheCallersAffinityIsRestored) {
  CpuExecutor ex(CpuExecutor::Options{.threads = 2, .grain_elems = 64});
  cpu_set_t before;
  ASSERT_EQ(::pthread_getaffinity_np(::pthread_self(), sizeof before, &before), 0);
  std::mutex mu;
  std::set<int> bound_to;
  bool all_single = true;
  ex.run_chunked(Range{0, 1 << 16}, 1 << 12,
                 [&](Range) {
                   cpu_set_t mine;
                   ASSERT_EQ(::pthread_getaffinity_np(::pthread_self(), sizeof mine, &mine), 0);
                   std::lock_guard<std::mutex> lock(mu);
                   all_single = all_single && CPU_COUNT(&mine) == 1;
                   for (int c = 0; c < CPU_SETSIZE; ++c) {
                     if (CPU_ISSET(c, &mine)) bound_to.insert(c);
                   }
                 },
                 {});
  EXPECT_TRUE(all_single);
  for (int c : bound_to) {
    EXPECT_NE(std::find(ex.cpus().begin(), ex.cpus().end(), c), ex.cpus().end()) << c;
  }
  cpu_set_t after;
  ASSERT_EQ(::pthread_getaffinity_np(::pthread_self(), sizeof after, &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&before, &after));
}

TEST(OptimExecutor, ThreadsDefaultToTheNodesPusAndArePinnedThere) {
  CpuExecutor ex;
  EXPECT_GE(ex.threads(), 1);
  EXPECT_EQ(static_cast<std::size_t>(ex.threads()), ex.cpus().size());
  CpuExecutor unpinned(CpuExecutor::Options{.threads = 3, .pin_threads = false});
  EXPECT_EQ(unpinned.threads(), 3);
  EXPECT_TRUE(unpinned.cpus().empty());
}

}  // namespace
}  // namespace zoro::optim::testing

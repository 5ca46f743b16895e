// zoro-bench-cpu-adam: how close the fused CPU Adam comes to memory speed.
//
// For N parameters and each thread count, for each variant (gradient fp32/bf16/fp16; half
// copy out or not; fp32 or bf16 moments) it measures, in this process:
//   adam      adam_step() through the public API (validation, dispatch, executor included);
//   roofline  the same loads and stores (same arrays read, same written, in place) with an
//             add or two per element, with the same vector types on the same executor;
//   plain     the same math as one plain scalar loop, one thread, default flags.
// and reports seconds per step (median of --reps, adam and roofline interleaved so that noise
// from other processes hits both alike), params/s, GB/s from the bytes the variant must move
// (each array read once and written once where it is an output), adam's fraction of the
// roofline, and adam's speed-up over the plain loop.
//
//   zoro-bench-cpu-adam [--n 50000000] [--threads 1,2] [--reps 15] [--plain-reps 3]
//                       [--chunk 0] [--isa avx512bf16] [--filter "g=fp32"] [--json out.json]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "bench/common/report.h"
#include "bench/cpu_adam/roofline.h"
#include "offload/optim/cpu_optimizer.h"
#include "offload/optim/kernels.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"
#include "runtime/device/topology.h"

namespace zoro::bench {
namespace {

using optim::CpuExecutor;
using optim::Range;
using optim::detail::KernelArgs;

struct Options {
  std::size_t n = 50'000'000;
  std::vector<int> threads;
  int reps = 15;
  int plain_reps = 3;
  std::size_t chunk = 0;
  std::string isa;
  std::string json;
  std::string filter;  // only variants whose name contains this
};

std::vector<int> parse_int_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    ZORO_CHECK(used == item.size() && v > 0,
               "--threads: '" << item << "' is not a positive integer");
    out.push_back(v);
  }
  ZORO_CHECK(!out.empty(), "--threads: empty list");
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      ZORO_CHECK(i + 1 < argc, arg << " needs a value");
      return argv[++i];
    };
    if (arg == "--n") {
      o.n = std::stoull(value());
    } else if (arg == "--threads") {
      o.threads = parse_int_list(value());
    } else if (arg == "--reps") {
      o.reps = std::stoi(value());
    } else if (arg == "--plain-reps") {
      o.plain_reps = std::stoi(value());
    } else if (arg == "--chunk") {
      o.chunk = std::stoull(value());
    } else if (arg == "--isa") {
      o.isa = value();
    } else if (arg == "--filter") {
      o.filter = value();
    } else if (arg == "--json") {
      o.json = value();
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: zoro-bench-cpu-adam [--n N] [--threads 1,2,...] [--reps R] "
                   "[--plain-reps R] [--chunk ELEMS] [--isa scalar|avx2|avx512|avx512bf16] "
                   "[--filter TEXT] [--json FILE]\n";
      std::exit(0);
    } else {
      ZORO_THROW(InvalidArgument, "unknown argument '" << arg << "' (see --help)");
    }
  }
  ZORO_CHECK(o.n > 0, "--n must be > 0");
  ZORO_CHECK(o.reps >= 1 && o.plain_reps >= 1, "--reps and --plain-reps must be >= 1");
  if (o.threads.empty()) {
    const int all = static_cast<int>(device::Topology::instance().allowed_cpus().size());
    for (int t = 1; t <= all; ++t) o.threads.push_back(t);
  }
  return o;
}

// Page-aligned memory bound to the node the threads run on, as the engine's pinned pool is.
class Array {
 public:
  Array(std::size_t bytes, int node) : bytes_(bytes) {
    data_ = device::Topology::instance().allocate_bound(bytes, node);
  }
  ~Array() { device::Topology::instance().free_bound(data_, bytes_); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  void* data() const { return data_; }

 private:
  std::size_t bytes_;
  void* data_;
};

struct Variant {
  DType grad;
  DType moments;
  bool half;
  DType half_dtype;  // bf16 for fp32/bf16 gradients, fp16 for fp16 gradients (fp16 training)
  std::string name() const {
    return std::string("g=") + to_string(grad) + " m=" + to_string(moments) +
           " half=" + (half ? to_string(half_dtype) : "none");
  }
  // Bytes one step must move per parameter: master r+w, gradient r, moments r+w, half w.
  double bytes_per_param() const {
    return 8.0 + static_cast<double>(size_of(grad)) + 4.0 * static_cast<double>(size_of(moments)) +
           (half ? 2.0 : 0.0);
  }
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  for (DType g : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (bool half : {false, true}) {
      for (DType m : {DType::kF32, DType::kBF16}) {
        out.push_back(Variant{g, m, half, g == DType::kF16 ? DType::kF16 : DType::kBF16});
      }
    }
  }
  return out;
}

double seconds_of(const auto& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void fill_random(void* data, std::size_t n, DType t, float lo, float hi, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float u = static_cast<float>(s >> 40) * 0x1p-24f;
    const float v = lo + (hi - lo) * u;
    if (t == DType::kF32) {
      static_cast<float*>(data)[i] = v;
    } else {
      static_cast<std::uint16_t*>(data)[i] =
          t == DType::kBF16 ? float_to_bf16(v) : float_to_fp16(v);
    }
  }
}

int run(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  if (!opt.isa.empty()) optim::set_isa(optim::parse_isa(opt.isa));
  const optim::Isa isa = optim::current_isa();
  const RooflineFn roofline = optim::isa_supported(optim::Isa::kAvx512) ? &roofline_avx512
                              : optim::isa_supported(optim::Isa::kAvx2) ? &roofline_avx2
                                                                        : nullptr;
  ZORO_CHECK(roofline != nullptr, "this benchmark's roofline kernel needs AVX2 or AVX-512");
  const int node = device::Topology::instance().current_numa_node();
  const std::size_t n = opt.n;

  std::cout << "zoro-bench-cpu-adam: n=" << n << " params, isa=" << optim::isa_name(isa)
            << ", reps=" << opt.reps << " (median), chunk=" << opt.chunk
            << ", load average at start: " << load_average() << "\n"
            << device::Topology::instance().describe() << "\n";

  Array master(n * 4, node), m(n * 4, node), v(n * 4, node), grad(n * 4, node), half(n * 2, node);
  nlohmann::json results = nlohmann::json::array();
  Table table({"variant", "threads", "s/step", "Mparam/s", "GB/s", "roof GB/s", "% roof", "plain s",
               "x plain"});

  std::vector<std::unique_ptr<CpuExecutor>> executors;
  for (int t : opt.threads) {
    executors.push_back(
        std::make_unique<CpuExecutor>(CpuExecutor::Options{.threads = t, .numa_node = node}));
  }

  for (const Variant& var : variants()) {
    if (!opt.filter.empty() && var.name().find(opt.filter) == std::string::npos) continue;
    fill_random(master.data(), n, DType::kF32, -1.f, 1.f, 1);
    fill_random(grad.data(), n, var.grad, -1.f, 1.f, 2);
    fill_random(m.data(), n, var.moments, -0.1f, 0.1f, 3);
    fill_random(v.data(), n, var.moments, 0.f, 0.01f, 4);
    const optim::AdamConfig config{
        .lr = 1e-3f, .weight_decay = 0.01f, .decoupled_weight_decay = true};
    const optim::AdamBuffers buffers{
        std::span<float>(static_cast<float*>(master.data()), n),
        optim::Tensor{m.data(), n, var.moments}, optim::Tensor{v.data(), n, var.moments},
        optim::ConstTensor{grad.data(), n, var.grad},
        var.half ? optim::Tensor{half.data(), n, var.half_dtype} : optim::Tensor{}};
    // The same coefficients as adam_step for step 10, for the plain loop and the roofline.
    KernelArgs args;
    args.master = static_cast<float*>(master.data());
    args.state1 = m.data();
    args.state2 = v.data();
    args.grad = grad.data();
    args.half_out = var.half ? half.data() : nullptr;
    args.grad_dtype = var.grad;
    args.state_dtype = var.moments;
    args.half_dtype = var.half_dtype;
    args.grad_scale = 1.f / 1024.f;
    args.decay = 1.f - 1e-3f * 0.01f;
    args.beta1 = 0.9f;
    args.one_minus_beta1 = 0.1f;
    args.beta2 = 0.999f;
    args.one_minus_beta2 = 0.001f;
    args.neg_step = static_cast<float>(-1e-3 / (1 - std::pow(0.9, 10)));
    args.inv_sqrt_bc2 = static_cast<float>(1 / std::sqrt(1 - std::pow(0.999, 10)));
    args.eps = 1e-8f;

    std::vector<double> plain;
    plain_adam(args, 0, n);  // warm-up (first touch)
    for (int r = 0; r < opt.plain_reps; ++r)
      plain.push_back(seconds_of([&] { plain_adam(args, 0, n); }));
    const double plain_s = median(plain);

    std::int64_t step = 1;
    for (auto& ex : executors) {
      auto adam = [&] {
        optim::adam_step(*ex, config, optim::StepInfo{step++, 1.f / 1024.f}, buffers, Range{0, n},
                         opt.chunk);
      };
      auto roof = [&] {
        ex->run_chunked(Range{0, n}, opt.chunk, [&](Range r) { roofline(args, r.begin, r.end); },
                        {});
      };
      adam();
      roof();
      std::vector<double> ta, tr;
      for (int r = 0; r < opt.reps; ++r) {
        ta.push_back(seconds_of(adam));
        tr.push_back(seconds_of(roof));
      }
      const double sa = median(ta), sr = median(tr);
      const double bytes = var.bytes_per_param() * static_cast<double>(n);
      const double gbs = bytes / sa / 1e9, roof_gbs = bytes / sr / 1e9;
      table.add_row({var.name(), std::to_string(ex->threads()), fmt("%.4f", sa),
                     fmt("%.0f", static_cast<double>(n) / sa / 1e6), fmt("%.2f", gbs),
                     fmt("%.2f", roof_gbs), fmt("%.1f", 100.0 * sr / sa), fmt("%.4f", plain_s),
                     fmt("%.2f", plain_s / sa)});
      results.push_back({{"variant", var.name()},
                         {"grad", to_string(var.grad)},
                         {"moments", to_string(var.moments)},
                         {"half", var.half ? to_string(var.half_dtype) : "none"},
                         {"threads", ex->threads()},
                         {"bytes_per_param", var.bytes_per_param()},
                         {"seconds_per_step", sa},
                         {"seconds_per_step_all", ta},
                         {"params_per_second", static_cast<double>(n) / sa},
                         {"gb_per_second", gbs},
                         {"roofline_seconds", sr},
                         {"roofline_seconds_all", tr},
                         {"roofline_gb_per_second", roof_gbs},
                         {"fraction_of_roofline", sr / sa},
                         {"plain_seconds", plain_s},
                         {"speedup_over_plain", plain_s / sa}});
      std::cerr << "  done: " << var.name() << " threads=" << ex->threads() << "\n";
    }
  }
  std::cout << table.render();
  const std::string load_end = load_average();
  std::cout << "load average at end: " << load_end << "\n";
  nlohmann::json doc;
  doc["context"] = run_context();
  doc["benchmark"] = "cpu-adam";
  doc["config"] = {{"n", n},
                   {"threads", opt.threads},
                   {"reps", opt.reps},
                   {"plain_reps", opt.plain_reps},
                   {"chunk", opt.chunk},
                   {"isa", optim::isa_name(isa)},
                   {"optimizer", "AdamW (decoupled wd 0.01)"}};
  doc["load_average_end"] = load_end;
  doc["results"] = results;
  write_json(opt.json, doc);
  return 0;
}

}  // namespace
}  // namespace zoro::bench

int main(int argc, char** argv) {
  try {
    return zoro::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "zoro-bench-cpu-adam: " << e.what() << "\n";
    return 2;
  }
}

// zoro-bench-train: what does offload cost, and how large a model trains (issue #8)?
//
// zoro-train's GPT (examples/zoro_train/model) on synthetic random tokens, in the same process
// and on the same device, in three modes: offload (the engine, synchronous update), offload +
// DPU (delayed parameter update after one synchronous step), and no offload (DeviceParams:
// AdamW's state in device memory, where it fits: OutOfMemory is reported as "does not fit"
// with its numbers). For each tokens-per-step setting (micro-batch x seq-len x grad-accum) it
// prints each mode's median step time, tokens/s, model TFLOPS (GptConfig::flops_per_token),
// where the step's time goes (the trainer's compute and optimizer times, the engine's
// device-measured exposed wait, copies and CPU update) and the memory it used; then the
// ratios step(offload) / step(no offload) and step(DPU) / step(no offload) per setting,
// marking the first setting where each reaches <= 1.10.
//
// --find-largest: the largest depth (or width, --search width) that trains --search-steps
// steps with a finite loss, with and without offload, on the given device (on the host
// backend, host:mem=SIZE caps the "device"): doubling until a size fails, then bisection;
// the largest that fits, and why the next size up does not.
//
// --rounds R runs the three modes R times, interleaved, and takes the medians over all their
// timed steps: on a shared host whose load drifts, all three modes see the same drift.
//
// On the host backend the model's "GPU" compute is the reference kernels on the same CPU
// cores as the CPU optimizer, so absolute times are not GPU figures, and the ratios measure
// that contention; the program says so.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/report.h"
#include "bench/train/train_run.h"
#include "examples/zoro_train/model/gpt_config.h"
#include "runtime/base/dtype.h"
#include "runtime/base/error.h"
#include "runtime/base/units.h"
#include "runtime/device/device.h"

namespace {

using zoro::bench::Mode;
using zoro::bench::RunOptions;
using zoro::bench::RunResult;
using zoro::bench::Setting;
using zoro::train::GptConfig;

constexpr double kTargetRatio = 1.10;  // issue #8: offload within 10% of no offload
constexpr Mode kModes[] = {Mode::kOffload, Mode::kOffloadDpu, Mode::kNoOffload};

struct Options {
  std::string device = "auto";  // cuda:0 when usable, else host
  std::string preset = "default";
  int layers = 0, heads = 0, channels = 0, vocab = 0, max_seq = 0;  // 0: the preset's
  std::vector<int> micro_batch = {8};
  std::vector<int> seq_len;  // empty: the model's max_seq
  std::vector<int> grad_accum = {1};
  std::optional<zoro::DType> dtype;  // default: bf16 on CUDA, fp32 on the host
  int warmup = 3;
  int steps = 5;
  int rounds = 1;  // the three modes run this many times, interleaved; medians over all
  int threads = 0;
  double lr = 1e-4;
  bool find_largest = false;
  std::string search = "depth";
  int search_steps = 3;
  int search_max = 4096;  // largest layers (depth) or width units (width) tried
  int width_step = 0;     // channels per width unit; 0: 8 x heads
  std::string json;
};

[[noreturn]] void usage(const std::string& error) {
  std::fprintf(
      stderr,
      "%s%susage: zoro-bench-train [--device auto|host[:mem=SIZE]|cuda:N] [--preset NAME]\n"
      "         [--layers L] [--heads H] [--channels C] [--vocab V] [--max-seq S]\n"
      "         [--micro-batch 8,16] [--seq-len 64] [--grad-accum 1,4] [--dtype fp32|bf16|fp16]\n"
      "         [--warmup N] [--steps N] [--rounds R] [--threads T] [--lr LR] [--json FILE]\n"
      "       zoro-bench-train --find-largest [--search depth|width] [--search-steps 3]\n"
      "         [--search-max K] [--width-step C] (model, device, first micro-batch and\n"
      "         seq-len as above)\n",
      error.c_str(), error.empty() ? "" : "\n");
  throw zoro::InvalidArgument(error.empty() ? "usage" : error);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value for " + a);
      return argv[++i];
    };
    auto integer = [&](const std::string& v, long lo, long hi) {
      char* end = nullptr;
      const long x = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || x < lo || x > hi) {
        usage(a + " " + v + " is not an integer in [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "]");
      }
      return static_cast<int>(x);
    };
    auto list = [&](long lo, long hi) {
      std::vector<int> out;
      std::stringstream s(value());
      std::string item;
      while (std::getline(s, item, ',')) out.push_back(integer(item, lo, hi));
      if (out.empty()) usage(a + " needs at least one value");
      return out;
    };
    if (a == "--device") {
      o.device = value();
    } else if (a == "--preset") {
      o.preset = value();
    } else if (a == "--layers") {
      o.layers = integer(value(), 1, 1 << 16);
    } else if (a == "--heads") {
      o.heads = integer(value(), 1, 1 << 12);
    } else if (a == "--channels") {
      o.channels = integer(value(), 1, 1 << 20);
    } else if (a == "--vocab") {
      o.vocab = integer(value(), 1, 1 << 24);
    } else if (a == "--max-seq") {
      o.max_seq = integer(value(), 1, 1 << 20);
    } else if (a == "--micro-batch") {
      o.micro_batch = list(1, 1 << 16);
    } else if (a == "--seq-len") {
      o.seq_len = list(1, 1 << 20);
    } else if (a == "--grad-accum") {
      o.grad_accum = list(1, 1 << 12);
    } else if (a == "--dtype") {
      o.dtype = zoro::parse_dtype(value(), "--dtype");
    } else if (a == "--warmup") {
      o.warmup = integer(value(), 2, 1000);  // DPU's one synchronous step, then one deferred
    } else if (a == "--steps") {
      o.steps = integer(value(), 1, 100000);
    } else if (a == "--rounds") {
      o.rounds = integer(value(), 1, 1000);
    } else if (a == "--threads") {
      o.threads = integer(value(), 0, 4096);
    } else if (a == "--lr") {
      const std::string v = value();
      char* end = nullptr;
      o.lr = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.lr > 0)) usage("--lr " + v + " is not > 0");
    } else if (a == "--find-largest") {
      o.find_largest = true;
    } else if (a == "--search") {
      o.search = value();
      if (o.search != "depth" && o.search != "width") usage("--search is depth or width");
    } else if (a == "--search-steps") {
      o.search_steps = integer(value(), 1, 1000);
    } else if (a == "--search-max") {
      o.search_max = integer(value(), 1, 1 << 16);
    } else if (a == "--width-step") {
      o.width_step = integer(value(), 1, 1 << 16);
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--help" || a == "-h") {
      usage("");
    } else {
      usage("unknown option " + a);
    }
  }
  return o;
}

GptConfig model_shape(const Options& o) {
  GptConfig c = GptConfig::preset(o.preset, o.layers, o.heads, o.channels, o.vocab, o.max_seq);
  c.validate();
  return c;
}

std::string opt_ms(const std::optional<double>& v) {
  return v ? zoro::bench::fmt("%.2f", *v) : std::string("-");
}

nlohmann::json opt_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json shape_json(const GptConfig& c) {
  return {{"layers", c.layers},    {"heads", c.heads},     {"channels", c.channels},
          {"vocab", c.vocab},      {"max_seq", c.max_seq}, {"params", c.num_params()},
          {"shape", c.to_string()}};
}

nlohmann::json result_json(const RunResult& r) {
  nlohmann::json j = {{"fits", r.fits}};
  if (!r.fits) {
    j["failure"] = r.failure;
    return j;
  }
  j.update({{"step_ms", r.step_ms},
            {"tokens_per_s", r.tokens_per_s},
            {"model_tflops", r.tflops},
            {"compute_ms", r.compute_ms},
            {"optimizer_ms", r.optimizer_ms},
            {"exposed_ms", opt_json(r.exposed_ms)},
            {"d2h_ms", opt_json(r.d2h_ms)},
            {"h2d_ms", opt_json(r.h2d_ms)},
            {"update_ms", opt_json(r.update_ms)},
            {"device_peak_bytes", r.device_peak_bytes},
            {"pinned_host_peak_bytes", r.pinned_host_peak_bytes},
            {"deferred_steps", r.deferred_steps},
            {"losses", r.losses}});
  return j;
}

// ---- offload cost per tokens-per-step ------------------------------------------------------

struct SettingResult {
  Setting setting;
  RunResult modes[3];  // kModes order
  std::optional<double> ratio(Mode m) const {
    const RunResult& base = modes[2];
    const RunResult& r = modes[static_cast<int>(m)];
    if (!base.fits || !r.fits || base.step_ms <= 0) return std::nullopt;
    return r.step_ms / base.step_ms;
  }
};

int run_throughput(const Options& o, zoro::device::Device& dev, const GptConfig& model,
                   const RunOptions& ro, nlohmann::json& doc) {
  std::vector<Setting> settings;
  const std::vector<int> seqs = o.seq_len.empty() ? std::vector<int>{model.max_seq} : o.seq_len;
  for (int b : o.micro_batch) {
    for (int t : seqs) {  // each <= max_seq (run() checked)
      for (int g : o.grad_accum) settings.push_back({b, t, g});
    }
  }
  std::stable_sort(settings.begin(), settings.end(),
                   [](const Setting& a, const Setting& b) { return a.tokens() < b.tokens(); });

  std::vector<SettingResult> results;
  for (const Setting& s : settings) {
    SettingResult sr{s, {}};
    // Rounds interleave the modes, so a load that drifts during the run (a shared host) moves
    // all three alike.
    for (int round = 0; round < o.rounds; ++round) {
      for (Mode m : kModes) {
        std::fprintf(stderr, "  %s, %s tokens/step, round %d ...\n", zoro::bench::mode_name(m),
                     s.to_string().c_str(), round + 1);
        RunResult r = zoro::bench::run_mode(dev, model, m, s, ro);
        RunResult& into = sr.modes[static_cast<int>(m)];
        if (round == 0) {
          into = std::move(r);
        } else {
          zoro::bench::merge(into, r, model, s);
        }
      }
    }
    results.push_back(std::move(sr));
  }

  zoro::bench::Table table({"BxTxGA", "tokens/step", "mode", "step ms", "tokens/s", "TFLOPS",
                            "compute ms", "optim ms", "exposed ms", "d2h ms", "h2d ms", "update ms",
                            "device peak", "pinned host"});
  std::vector<std::string> notes;
  for (const SettingResult& sr : results) {
    for (Mode m : kModes) {
      const RunResult& r = sr.modes[static_cast<int>(m)];
      std::vector<std::string> row = {sr.setting.to_string(), std::to_string(sr.setting.tokens()),
                                      zoro::bench::mode_name(m)};
      if (!r.fits) {
        row.push_back("does not fit");
        row.resize(14, "-");
        notes.push_back(sr.setting.to_string() + " " + zoro::bench::mode_name(m) +
                        ": does not fit: " + r.failure);
      } else {
        row.insert(
            row.end(),
            {zoro::bench::fmt("%.2f", r.step_ms), zoro::bench::fmt("%.0f", r.tokens_per_s),
             zoro::bench::fmt("%.4f", r.tflops), zoro::bench::fmt("%.2f", r.compute_ms),
             zoro::bench::fmt("%.2f", r.optimizer_ms), opt_ms(r.exposed_ms), opt_ms(r.d2h_ms),
             opt_ms(r.h2d_ms), opt_ms(r.update_ms), zoro::format_bytes(r.device_peak_bytes),
             zoro::format_bytes(r.pinned_host_peak_bytes)});
      }
      table.add_row(std::move(row));
    }
  }
  std::printf("%s\n", table.render().c_str());
  for (const std::string& n : notes) std::printf("%s\n", n.c_str());

  // The ratios, and the first setting (fewest tokens per step) within the target.
  zoro::bench::Table ratios(
      {"BxTxGA", "tokens/step", "offload / no-offload", "DPU / no-offload", "first <= 1.10"});
  std::optional<std::size_t> first[2];
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const SettingResult& sr = results[i];
    std::vector<std::string> row = {sr.setting.to_string(), std::to_string(sr.setting.tokens())};
    nlohmann::json j = {{"micro_batch", sr.setting.micro_batch},
                        {"seq_len", sr.setting.seq_len},
                        {"grad_accum", sr.setting.grad_accum},
                        {"tokens_per_step", sr.setting.tokens()}};
    std::string mark;
    for (int k = 0; k < 2; ++k) {
      const std::optional<double> ratio = sr.ratio(kModes[k]);
      row.push_back(ratio ? zoro::bench::fmt("%.3f", *ratio) : std::string("-"));
      if (ratio && *ratio <= kTargetRatio && !first[k]) {
        first[k] = i;
        mark += std::string(mark.empty() ? "" : ", ") + (k == 0 ? "offload" : "DPU");
      }
      j[k == 0 ? "ratio_offload" : "ratio_dpu"] = opt_json(ratio);
    }
    row.push_back(mark.empty() ? "" : "<- " + mark);
    for (Mode m : kModes) j[zoro::bench::mode_key(m)] = result_json(sr.modes[static_cast<int>(m)]);
    ratios.add_row(std::move(row));
    rows.push_back(j);
  }
  std::printf("\nstep time over no offload's, per tokens per step:\n%s\n", ratios.render().c_str());
  nlohmann::json firsts;
  for (int k = 0; k < 2; ++k) {
    const char* name = zoro::bench::mode_name(kModes[k]);
    if (first[k]) {
      const Setting& s = results[*first[k]].setting;
      std::printf("%s: first <= %.2f x no offload at %zu tokens/step (%s)\n", name, kTargetRatio,
                  s.tokens(), s.to_string().c_str());
      firsts[zoro::bench::mode_key(kModes[k])] = {{"tokens_per_step", s.tokens()},
                                                  {"setting", s.to_string()}};
    } else {
      std::printf("%s: not within %.2f x no offload at any setting run\n", name, kTargetRatio);
      firsts[zoro::bench::mode_key(kModes[k])] = nullptr;
    }
  }
  std::printf(
      "\nstep ms: median over the timed steps of every round (the trainer's wall time per\n"
      "step). compute ms: forward+backward until the losses are read. optim ms: the stores'\n"
      "end_micro_step calls. exposed/d2h/h2d/update ms: the engine's device-measured\n"
      "StepTiming (offload modes). TFLOPS: GptConfig::flops_per_token(seq_len) x tokens/s.\n"
      "device peak, pinned host: high-water marks during the mode's runs.\n");
  if (dev.backend() != zoro::device::BackendKind::kCuda) {
    std::printf(
        "host backend, no offload: AdamW is the single-threaded reference kernel, a task on the\n"
        "compute stream (in the next step's compute ms), where the engine's CPU optimizer is\n"
        "threaded and vectorized, so a ratio below 1 here is not a GPU prediction.\n");
  }
  doc["settings"] = rows;
  doc["first_within_target"] = firsts;
  doc["target_ratio"] = kTargetRatio;
  return 0;
}

// ---- the largest shape that trains ---------------------------------------------------------

struct Trial {
  int k = 0;  // layers (depth) or width units (width)
  GptConfig shape;
  RunResult run;
  bool ok() const { return run.fits; }
};

GptConfig shape_at(const GptConfig& base, const Options& o, int width_step, int k) {
  GptConfig c = base;
  if (o.search == "width") {
    // Past int: validate() refuses the shape (the search's failure) instead of wrapping.
    c.channels = static_cast<int>(std::min<long long>(static_cast<long long>(k) * width_step,
                                                      std::numeric_limits<int>::max()));
  } else {
    c.layers = k;
  }
  return c;
}

struct Search {
  Mode mode;
  std::vector<Trial> trials;           // in the order tried
  std::optional<std::size_t> largest;  // index into trials
  std::optional<std::size_t> next_up;  // the smallest size that failed
  double seconds = 0;
};

Search search_largest(const Options& o, zoro::device::Device& dev, const GptConfig& base,
                      int width_step, const Setting& setting, RunOptions ro, Mode mode) {
  ro.warmup_steps = 0;
  ro.timed_steps = o.search_steps;
  Search s{mode, {}, std::nullopt, std::nullopt, 0};
  const auto t0 = std::chrono::steady_clock::now();
  std::map<int, std::size_t> index;  // k -> trials position
  auto attempt = [&](int k) {
    Trial t{k, shape_at(base, o, width_step, k), {}};
    try {
      t.shape.validate();
      t.run = zoro::bench::run_mode(dev, t.shape, mode, setting, ro, /*require_finite_loss=*/true);
    } catch (const zoro::Error& e) {  // a shape the kernels refuse, a backend failure
      t.run.fits = false;
      t.run.failure = e.what();
    }
    std::fprintf(stderr, "  %s, %s: %s\n", zoro::bench::mode_name(mode),
                 t.shape.to_string().c_str(), t.run.fits ? "trains" : "fails");
    index[k] = s.trials.size();
    s.trials.push_back(std::move(t));
    return s.trials.back().ok();
  };
  int lo = 0, hi = 0;
  for (int k = 1;; k = std::min(2 * k, o.search_max)) {
    if (!attempt(k)) {
      hi = k;
      break;
    }
    lo = k;
    if (k == o.search_max) break;
  }
  while (hi > 0 && hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (attempt(mid)) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  if (lo > 0) s.largest = index[lo];
  if (hi > 0) s.next_up = index[hi];
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

int run_find_largest(const Options& o, zoro::device::Device& dev, const GptConfig& base,
                     const RunOptions& ro, nlohmann::json& doc) {
  const int width_step = o.width_step > 0 ? o.width_step : 8 * base.heads;
  if (o.search == "width" && width_step % base.heads != 0) {
    usage("--width-step " + std::to_string(width_step) +
          " is not a multiple of heads=" + std::to_string(base.heads));
  }
  const Setting setting{o.micro_batch.front(), o.seq_len.empty() ? base.max_seq : o.seq_len.front(),
                        1};
  std::printf("search: %s (%s), %d steps of %s tokens each with a finite loss, up to %d %s\n",
              o.search.c_str(),
              o.search == "depth" ? "layers"
                                  : ("channels in steps of " + std::to_string(width_step)).c_str(),
              o.search_steps, setting.to_string().c_str(), o.search_max,
              o.search == "depth" ? "layers" : "steps");
  std::fflush(stdout);
  std::vector<Search> searches;
  for (Mode m : {Mode::kOffload, Mode::kNoOffload}) {
    searches.push_back(search_largest(o, dev, base, width_step, setting, ro, m));
  }
  zoro::bench::Table table({"mode", "largest that trains", "params", "device peak", "pinned host",
                            "last loss", "next size up", "trials", "s"});
  nlohmann::json out = nlohmann::json::array();
  std::vector<std::string> why;
  for (const Search& s : searches) {
    std::vector<std::string> row = {zoro::bench::mode_name(s.mode)};
    nlohmann::json j = {{"mode", zoro::bench::mode_key(s.mode)}, {"seconds", s.seconds}};
    if (s.largest) {
      const Trial& t = s.trials[*s.largest];
      std::ostringstream shape;
      shape << "L=" << t.shape.layers << " C=" << t.shape.channels;
      row.insert(row.end(), {shape.str(), zoro::bench::fmt("%.3fM", t.shape.num_params() / 1e6),
                             zoro::format_bytes(t.run.device_peak_bytes),
                             zoro::format_bytes(t.run.pinned_host_peak_bytes),
                             zoro::bench::fmt("%.4f", t.run.losses.back())});
      j["largest"] = shape_json(t.shape);
      j["largest"]["device_peak_bytes"] = t.run.device_peak_bytes;
      j["largest"]["pinned_host_peak_bytes"] = t.run.pinned_host_peak_bytes;
      j["largest"]["losses"] = t.run.losses;
    } else {
      row.insert(row.end(), {"nothing fits", "-", "-", "-", "-"});
      j["largest"] = nullptr;
    }
    if (s.next_up) {
      const Trial& t = s.trials[*s.next_up];
      std::ostringstream shape;
      shape << "L=" << t.shape.layers << " C=" << t.shape.channels;
      row.push_back(shape.str());
      why.push_back(std::string(zoro::bench::mode_name(s.mode)) + ", " + shape.str() + " (" +
                    zoro::bench::fmt("%.3fM", t.shape.num_params() / 1e6) +
                    " params): " + t.run.failure);
      j["next_up"] = shape_json(t.shape);
      j["next_up"]["failure"] = t.run.failure;
    } else {
      row.push_back("(--search-max reached)");
      j["next_up"] = nullptr;
    }
    row.push_back(std::to_string(s.trials.size()));
    row.push_back(zoro::bench::fmt("%.1f", s.seconds));
    nlohmann::json trials = nlohmann::json::array();
    for (const Trial& t : s.trials) {
      trials.push_back(
          {{"layers", t.shape.layers},
           {"channels", t.shape.channels},
           {"params", t.shape.num_params()},
           {"trains", t.ok()},
           {"device_peak_bytes", t.run.device_peak_bytes},
           {"failure", t.ok() ? nlohmann::json(nullptr) : nlohmann::json(t.run.failure)}});
    }
    j["trials"] = trials;
    table.add_row(std::move(row));
    out.push_back(j);
  }
  std::printf("%s\n", table.render().c_str());
  for (const std::string& w : why) std::printf("next size up, %s\n", w.c_str());
  if (searches[0].largest && searches[1].largest) {
    const double a =
        static_cast<double>(searches[0].trials[*searches[0].largest].shape.num_params());
    const double b =
        static_cast<double>(searches[1].trials[*searches[1].largest].shape.num_params());
    std::printf("offload trains %.2fx the parameters of no offload on this device\n", a / b);
    doc["offload_over_no_offload_params"] = a / b;
  }
  doc["search"] = {{"dimension", o.search},
                   {"width_step", o.search == "width" ? nlohmann::json(width_step) : nullptr},
                   {"steps", o.search_steps},
                   {"search_max", o.search_max},
                   {"micro_batch", setting.micro_batch},
                   {"seq_len", setting.seq_len},
                   {"results", out}};
  return 0;
}

// The 1-minute load average (Linux), or -1: host-backend times move with what else runs.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  if (!(in >> load)) return -1;
  return load;
}

int run(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.device == "auto") o.device = zoro::device::cuda_device_count() > 0 ? "cuda:0" : "host";
  auto dev = zoro::device::open_device(o.device);
  const bool gpu = dev->backend() == zoro::device::BackendKind::kCuda;
  const GptConfig model = model_shape(o);
  for (int t : o.seq_len) {
    if (t > model.max_seq) {
      usage("--seq-len " + std::to_string(t) + " is longer than the model's max_seq " +
            std::to_string(model.max_seq));
    }
  }
  RunOptions ro;
  ro.dtype = o.dtype.value_or(gpu ? zoro::DType::kBF16 : zoro::DType::kF32);
  ro.warmup_steps = o.warmup;
  ro.timed_steps = o.steps;
  ro.cpu_threads = o.threads;
  ro.lr = o.lr;

  std::printf("zoro-bench-train on %s (%s), %s weights and gradients\n", dev->info().spec.c_str(),
              dev->info().name.c_str(), zoro::to_string(ro.dtype));
  if (o.find_largest) {
    std::printf("base model (the search varies its %s): %s\n",
                o.search == "depth" ? "layers" : "channels", model.to_string().c_str());
  } else {
    std::printf("model: %s\n", model.to_string().c_str());
  }
  if (!gpu) {
    std::printf(
        "host backend: absolute times are CPU figures, not GPU ones; the model's compute runs\n"
        "on the same cores as the CPU optimizer, so the offload ratios measure that contention.\n"
        "load average at start: %.2f on %u hardware threads (other work moves these figures)\n",
        load_average(), std::thread::hardware_concurrency());
  }
  if (!o.find_largest) {
    std::printf(
        "%d warm-up steps (DPU defers from step 2), then %d timed steps per mode%s\n\n", o.warmup,
        o.steps,
        o.rounds > 1 ? (", " + std::to_string(o.rounds) + " rounds interleaved").c_str() : "");
  }
  std::fflush(stdout);  // before the progress lines on stderr
  nlohmann::json doc;
  doc["benchmark"] = "train";
  doc["context"] = zoro::bench::run_context();
  doc["device"] = dev->info().spec;
  doc["device_name"] = dev->info().name;
  doc["host_backend"] = !gpu;
  doc["load_average_start"] = load_average();
  doc["model"] = shape_json(model);
  doc["dtype"] = zoro::to_string(ro.dtype);
  doc["warmup_steps"] = o.warmup;
  doc["timed_steps"] = o.steps;
  doc["rounds"] = o.rounds;
  const int rc = o.find_largest ? run_find_largest(o, *dev, model, ro, doc)
                                : run_throughput(o, *dev, model, ro, doc);
  doc["load_average_end"] = load_average();
  zoro::bench::write_json(o.json, doc);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const zoro::InvalidArgument& e) {
    if (std::string(e.what()) == "usage") return 0;
    std::fprintf(stderr, "zoro-bench-train: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zoro-bench-train: %s\n", e.what());
    return 1;
  }
}

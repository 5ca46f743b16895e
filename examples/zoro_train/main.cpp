// zoro-train: the reference trainer. A GPT-2 whose forward and backward run in kernels/ (CUDA
// with cuBLAS on a GPU, the reference kernels on the host backend) and whose optimizer state
// lives in host memory through zoro's offload engine.
//
//   zoro-train                          the embedded default: a small GPT learns reversed-digit
//                                       addition (on the GPU if there is one, else on the host)
//   zoro-train --preset gpt2 --data corpus.txt --tokenizer gpt2 --bpe-encoder encoder.json
//              --bpe-merges vocab.bpe --init-weights gpt2.safetensors --steps 1000
//   mpirun -np 4 zoro-train ...          data parallel: each rank its own data and 1/4 of the
//                                        optimizer state (ZeRO-2 with offload)
//
// Read top to bottom: options -> launch (device, ranks) -> data -> model and its parameters ->
// resume -> the loop (schedule, step, log, eval, checkpoint, budget) -> weights and a sample.
// Exit status: 0 done, 1 a runtime error, 2 a command-line error; every error is one message
// on stderr naming the problem.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "examples/zoro_train/io/batch_loader.h"
#include "examples/zoro_train/io/dataset.h"
#include "examples/zoro_train/io/json_log.h"
#include "examples/zoro_train/io/lr_schedule.h"
#include "examples/zoro_train/io/options.h"
#include "examples/zoro_train/io/safetensors.h"
#include "examples/zoro_train/io/stop_rule.h"
#include "examples/zoro_train/io/synthetic_task.h"
#include "examples/zoro_train/io/tokenizer.h"
#include "examples/zoro_train/model/gpt.h"
#include "examples/zoro_train/model/gpt_weights.h"
#include "examples/zoro_train/model/param_store.h"
#include "examples/zoro_train/model/trainer.h"
#include "runtime/base/check.h"
#include "runtime/base/error.h"
#include "runtime/base/file_util.h"
#include "runtime/base/units.h"
#include "runtime/config.h"
#include "runtime/device/device.h"

namespace zoro::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Everything a run prints goes through rank 0; other ranks stay quiet unless they fail.
struct Console {
  bool enabled = true;
  template <class... Args>
  void line(const Args&... args) const {
    if (!enabled) return;
    std::ostringstream s;
    (s << ... << args);
    std::cout << s.str() << '\n' << std::flush;
  }
};

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string scientific(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

// ---- launch ---------------------------------------------------------------------------------

// "auto" picks this rank's GPU (its local rank) when there is one, else the host backend.
std::string device_spec(const TrainOptions& opt) {
  if (opt.device != "auto") return opt.device;
  if (device::cuda_device_count() > 0) {
    return "cuda:" + std::to_string(comm::local_rank_from_environment());
  }
  return "host";
}

// ---- data -----------------------------------------------------------------------------------

struct Data {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<BatchSource> source;
  const SyntheticTask* task = nullptr;  // the embedded task, for accuracy and sample prompts
  const TokenDataset* dataset = nullptr;
};

Data open_data(const TrainOptions& opt, const Console& out) {
  Data d;
  if (opt.tokenizer == "gpt2") {
    d.tokenizer = Gpt2BpeTokenizer::from_files(opt.bpe_encoder, opt.bpe_merges);
  } else {
    d.tokenizer = std::make_unique<ByteTokenizer>();
  }
  if (opt.uses_embedded_task()) {
    auto task = std::make_unique<SyntheticTask>();
    d.task = task.get();
    d.source = std::move(task);
    out.line("data: the embedded task (addition, answers reversed: \"47+85=231\"), byte tokens");
  } else {
    DatasetOptions o;
    o.seq_len = opt.seq_len;
    auto ds = std::make_unique<TokenDataset>(TokenDataset::from_file(opt.data, *d.tokenizer, o));
    d.dataset = ds.get();
    out.line("data: ", opt.data, ", ", ds->token_count(), " ", d.tokenizer->name(), " tokens",
             ds->validation_overlaps_train() ? " (too small for a separate validation split)" : "");
    d.source = std::move(ds);
  }
  return d;
}

// ---- model ----------------------------------------------------------------------------------

// Each rank draws one batch of each split before anything else, so a data set too small for
// this many ranks fails at once with the source's message, not in the loader thread later.
void check_data(const TrainOptions& opt, const Data& data, int rank, int world) {
  const std::size_t n = static_cast<std::size_t>(opt.micro_batch) * opt.seq_len;
  std::vector<std::int32_t> inputs(n), targets(n);
  for (const Split split : {Split::kTrain, Split::kValidation}) {
    data.source->make_batch(split, {opt.seed, rank, world, 0, 0}, opt.micro_batch, opt.seq_len,
                            inputs, targets);
  }
}

GptConfig model_config(const TrainOptions& opt, const Data& data) {
  GptConfig c =
      GptConfig::preset(opt.preset, opt.layers, opt.heads, opt.channels, opt.vocab, opt.max_seq);
  const int need = data.source->vocab_size();
  if (opt.vocab > 0) {
    ZORO_CHECK(opt.vocab >= need, "--vocab " << opt.vocab << " is smaller than the "
                                             << data.tokenizer->name() << " tokenizer's " << need
                                             << " token ids");
  } else if (c.vocab < need) {
    c.vocab = need;
  }
  c.validate();
  ZORO_CHECK(opt.seq_len <= c.max_seq, "--seq-len " << opt.seq_len
                                                    << " is longer than the model's max_seq "
                                                    << c.max_seq << " (raise --max-seq)");
  return c;
}

Config engine_config(const TrainOptions& opt, const std::string& spec, bool on_cuda) {
  Config c = opt.engine_config.empty() ? Config{} : Config::from_file(opt.engine_config);
  c.device = spec;
  c.dtype = opt.dtype.value_or(on_cuda ? DType::kBF16 : DType::kF32);
  c.grad_dtype = c.dtype;
  c.optimizer = OptimizerKind::kAdamW;
  c.lr = opt.lr;
  c.beta1 = opt.beta1;
  c.beta2 = opt.beta2;
  c.eps = opt.eps;
  c.weight_decay = opt.weight_decay;
  c.clip_norm = opt.clip;
  c.grad_accum_steps = opt.grad_accum;
  c.dpu = opt.dpu;
  c.validate();
  return c;
}

// Without --engine-config, the gradient buckets are sized to the model: about a quarter of its
// gradient each (so the ring of four pipelines the copies of one backward), never more than
// the engine's default, never less than the largest tensor's gradient (EngineParams raises it
// to that). A 1M-parameter model then pins a few MiB instead of four 32 MiB buckets.
void size_buckets(Config& c, const GptConfig& model, const TrainOptions& opt) {
  if (!opt.engine_config.empty()) return;
  const std::size_t grad_bytes = model.num_params() * size_of(c.grad_dtype);
  const std::size_t quarter = align_up(grad_bytes / 4 + 1, std::size_t{1} << 16);
  c.bucket_bytes = std::min(c.bucket_bytes, quarter);
}

TensorInit initial_weights(const TrainOptions& opt, const GptConfig& config, const Console& out) {
  if (opt.init_weights.empty()) return gpt2_init(config, opt.seed);
  const SafetensorsFile file = SafetensorsFile::open(opt.init_weights);
  auto values = from_gpt2_tensors(config, [&](const std::string& name) {
    std::optional<NamedTensor> t;
    if (const TensorInfo* info = file.find(name)) {
      t = NamedTensor{name, info->shape, file.read_as_f32(name)};
    }
    return t;
  });
  out.line("weights: ", opt.init_weights, " (", file.tensors().size(), " tensors)");
  return values_init(std::move(values));
}

// A resumed run's JSON log: the records of the steps the checkpoint covers are kept, those a
// killed run logged after its last checkpoint are dropped (they are about to be redone), so
// the log reads as one uninterrupted run. Rewritten atomically.
void trim_log(const std::string& path, std::int64_t last_step) {
  if (!std::filesystem::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line torn by the kill
    }
    const char* key = j.contains("step") ? "step" : "eval_step";
    if (j.contains(key) && j[key].get<std::int64_t>() <= last_step) kept += line + "\n";
  }
  write_file_atomically(path, kept);
}

// ---- evaluation -----------------------------------------------------------------------------

struct Eval {
  double loss = 0;
  std::optional<TaskScore> score;  // the embedded task's accuracy
};

// Figures every rank must agree on (logged losses, stop decisions): reduced over the ranks by
// the engine, in order with its own collectives; unchanged on one rank.
std::vector<double> over_ranks(ParamStore& params, int world, std::vector<double> values,
                               comm::ReduceOp op) {
  if (world == 1) return values;
  return params.engine()->all_reduce_scalars(values, op);
}

Eval evaluate(const TrainOptions& opt, device::Device& dev, const Data& data, Gpt& model, int rank,
              int world) {
  BatchLoaderOptions lo;
  lo.split = Split::kValidation;
  lo.batch = opt.micro_batch;
  lo.seq_len = opt.seq_len;
  lo.seed = opt.seed;
  lo.rank = rank;
  lo.world_size = world;
  lo.stream_name = "eval-data";
  BatchLoader loader(dev, *data.source, lo);
  device::Stream& compute = model.params().compute_stream();
  Eval e;
  double sum = 0;
  for (int i = 0; i < opt.eval_batches; ++i) {
    const LoadedBatch b = loader.next();
    b.wait_ready(compute);
    model.forward({b.inputs, b.targets, b.batch, b.seq_len});
    for (double l : model.take_losses()) sum += l;  // synchronizes
    if (data.task != nullptr) {  // scored before release(): the pinned copy is reused after
      const std::size_t n = static_cast<std::size_t>(b.batch) * b.seq_len;
      const std::vector<std::int32_t> pred = model.predictions();
      TaskScore s =
          SyntheticTask::score({b.host_inputs, n}, {b.host_targets, n}, pred, b.batch, b.seq_len);
      if (e.score) {
        *e.score += s;
      } else {
        e.score = s;
      }
    }
    loader.release(b, compute);
  }
  // The mean over ranks, each rank having evaluated its own share of the validation split.
  std::vector<double> totals = {sum / opt.eval_batches};
  if (e.score) {
    totals.insert(
        totals.end(),
        {static_cast<double>(e.score->answer_chars), static_cast<double>(e.score->correct_chars),
         static_cast<double>(e.score->answers), static_cast<double>(e.score->correct_answers)});
  }
  totals = over_ranks(model.params(), world, totals, comm::ReduceOp::kSum);
  e.loss = totals[0] / world;
  if (e.score) {
    e.score->answer_chars = static_cast<std::int64_t>(totals[1]);
    e.score->correct_chars = static_cast<std::int64_t>(totals[2]);
    e.score->answers = static_cast<std::int64_t>(totals[3]);
    e.score->correct_answers = static_cast<std::int64_t>(totals[4]);
  }
  return e;
}

std::string describe(const Eval& e) {
  std::string s = "eval loss " + fixed(e.loss, 4);
  if (e.score) {
    s += ", answer accuracy " + fixed(100 * e.score->char_accuracy(), 1) + "% per digit, " +
         fixed(100 * e.score->exact_accuracy(), 1) + "% exact";
  }
  return s;
}

// ---- the run --------------------------------------------------------------------------------

int train(const TrainOptions& opt, const std::string& spec, device::Device& device,
          comm::Communicator& comm) {
  const auto t_start = Clock::now();
  device::Device* dev = &device;
  const bool on_cuda = dev->info().backend == device::BackendKind::kCuda;
  const int rank = comm.rank();
  const int world = comm.size();
  const Console out{rank == 0};
  ZORO_CHECK(world == 1 || !opt.no_offload,
             "--no-offload trains on one rank only (its optimizer is not sharded); launch "
             "without mpirun, or drop --no-offload");
  out.line("zoro-train: ", dev->info().name, " (", dev->info().spec, ")",
           world > 1 ? ", " + std::to_string(world) + " ranks over " + comm.backend_name() : "");

  // Data and model.
  Data data = open_data(opt, out);
  check_data(opt, data, rank, world);
  const GptConfig config = model_config(opt, data);
  Config cfg = engine_config(opt, spec, on_cuda);
  size_buckets(cfg, config, opt);
  const TensorInit init = initial_weights(opt, config, out);
  std::unique_ptr<ParamStore> params;
  if (opt.no_offload) {
    params = std::make_unique<DeviceParams>(cfg, *dev, gpt_tensors(config), init);
  } else {
    params = std::make_unique<EngineParams>(cfg, *dev, gpt_tensors(config), init, &comm);
  }
  GptOptions go;
  go.max_batch = opt.micro_batch;
  go.seq_len = opt.seq_len;
  go.recompute = opt.recompute;
  Gpt model(config, *params, go);
  Trainer trainer(model);
  out.line("model: ", config.to_string(), ", ", to_string(cfg.dtype), " weights, ",
           opt.no_offload ? "optimizer on the device (--no-offload)"
                          : std::string("optimizer state in host memory") +
                                (opt.dpu ? ", delayed parameter update" : ""),
           opt.recompute ? ", activation recomputation" : "");
  if (Engine* engine = params->engine(); engine != nullptr) {
    out.line("memory plan (this rank):\n", engine->plan().to_string());
  }

  // Resume: the optimizer state and the step; the data needs nothing (Note [Stateless
  // sampling] in batch_source.h), the schedule is a function of the step.
  std::int64_t start = 0;
  if (opt.resume) {
    trainer.load(opt.checkpoint_dir);
    start = params->step();
    out.line("resumed from ", opt.checkpoint_dir, " at step ", start);
    ZORO_CHECK(start <= opt.steps, "--resume: the checkpoint in "
                                       << opt.checkpoint_dir << " is at step " << start
                                       << ", past --steps " << opt.steps);
  }

  std::unique_ptr<JsonLogWriter> json;
  if (rank == 0 && !opt.json_log.empty()) {
    if (opt.resume) trim_log(opt.json_log, start);
    json = std::make_unique<JsonLogWriter>(opt.json_log, /*append=*/opt.resume);
  }
  LrSchedule schedule{opt.lr, opt.min_lr, opt.warmup_steps, opt.steps};
  schedule.validate();
  const StopRule stop_rule{opt.budget_hours, opt.stop_gain_per_hour, opt.stop_window};
  stop_rule.validate();
  std::vector<EvalPoint> evals;

  BatchLoaderOptions lo;
  lo.batch = opt.micro_batch;
  lo.seq_len = opt.seq_len;
  lo.seed = opt.seed;
  lo.rank = rank;
  lo.world_size = world;
  lo.first_step = start;
  lo.grad_accum = opt.grad_accum;
  lo.depth = opt.grad_accum + 2;  // a whole step held, plus the producer's next ones
  BatchLoader loader(*dev, *data.source, lo);
  device::Stream& compute = params->compute_stream();

  auto checkpoint = [&](std::int64_t step) {
    if (opt.checkpoint_dir.empty()) return;
    trainer.save(opt.checkpoint_dir);
    out.line("checkpoint: step ", step, " -> ", opt.checkpoint_dir);
  };

  const double tokens_per_step =
      static_cast<double>(opt.micro_batch) * opt.seq_len * opt.grad_accum * world;
  std::optional<double> first_loss;
  double last_loss = 0;
  std::optional<Eval> first_eval, last_eval;
  std::string stopped_because;
  const auto t_loop = Clock::now();
  std::int64_t step = start;
  while (step < opt.steps) {
    const double lr = lr_at(schedule, step);
    trainer.set_lr(lr);

    std::vector<LoadedBatch> loaded;
    std::vector<DeviceBatch> batches;
    double data_wait_ms = 0;
    for (int m = 0; m < opt.grad_accum; ++m) {
      loaded.push_back(loader.next());
      const LoadedBatch& b = loaded.back();
      b.wait_ready(compute);
      batches.push_back({b.inputs, b.targets, b.batch, b.seq_len});
      data_wait_ms += b.wait_ms;
    }
    StepResult r = trainer.step(batches);
    for (const LoadedBatch& b : loaded) loader.release(b, compute);
    ++step;
    // Every rank takes the same decisions: the loss logged and the time spent are the means
    // over the ranks, one collective (fp16's skipped overflow steps are not divergence).
    const std::vector<double> means =
        over_ranks(*params, world, {r.loss, seconds_since(t_loop) / 3600}, comm::ReduceOp::kSum);
    r.loss = means[0] / world;
    const double hours = means[1] / world;
    if (!first_loss) first_loss = r.loss;
    last_loss = r.loss;
    ZORO_CHECK_T(Error, std::isfinite(r.loss) || cfg.uses_loss_scaling(),
                 "step " << step << ": the loss is " << r.loss
                         << " (diverged; lower --lr or enable --clip)");

    const double tokens_per_s = tokens_per_step / (r.step_ms / 1e3);
    const device::MemoryStats dmem = dev->memory_stats(device::MemoryKind::kDevice);
    const device::MemoryStats hmem = dev->memory_stats(device::MemoryKind::kPinnedHost);
    if (json) {
      nlohmann::json j = {{"step", step},
                          {"loss", r.loss},
                          {"lr", lr},
                          {"grad_norm", r.grad_norm},
                          {"clip_factor", r.clip_factor},
                          {"applied", r.applied},
                          {"overflow", r.overflow},
                          {"loss_scale", r.loss_scale},
                          {"tokens", tokens_per_step},
                          {"tokens_per_s", tokens_per_s},
                          {"step_ms", r.step_ms},
                          {"compute_ms", r.compute_ms},
                          {"optimizer_ms", r.optimizer_ms},
                          {"data_wait_ms", data_wait_ms},
                          {"device_bytes", dmem.used_bytes},
                          {"device_peak_bytes", dmem.peak_bytes},
                          {"pinned_host_bytes", hmem.used_bytes}};
      if (r.report.timing) {
        const StepTiming& t = *r.report.timing;
        j["timing"] = {{"step", t.step},           {"d2h_ms", t.d2h_ms},
                       {"h2d_ms", t.h2d_ms},       {"exposed_ms", t.exposed_ms},
                       {"update_ms", t.update_ms}, {"bytes_d2h", t.bytes_d2h},
                       {"bytes_h2d", t.bytes_h2d}};
      }
      json->write(j);
    }
    if (step == start + 1 || step % opt.log_every == 0 || step == opt.steps) {
      std::string exposed;
      if (r.report.timing) exposed = ", exposed copy " + fixed(r.report.timing->exposed_ms, 1);
      out.line("step ", step, "/", opt.steps, " | loss ", fixed(r.loss, 4), " | lr ",
               scientific(lr), " | norm ", fixed(r.grad_norm, 2), " | ",
               fixed(tokens_per_s / 1e3, 1), "k tok/s | ms: step ", fixed(r.step_ms, 1),
               ", fwd+bwd ", fixed(r.compute_ms, 1), ", optimizer ", fixed(r.optimizer_ms, 1),
               exposed, ", data wait ", fixed(data_wait_ms, 2), " | device ",
               format_bytes(dmem.used_bytes), ", pinned host ", format_bytes(hmem.used_bytes),
               r.overflow ? " | overflow: step skipped" : "");
    }

    if (opt.eval_every > 0 && (step % opt.eval_every == 0 || step == opt.steps)) {
      const Eval e = evaluate(opt, *dev, data, model, rank, world);
      if (!first_eval) first_eval = e;
      last_eval = e;
      out.line("eval @ step ", step, ": ", describe(e));
      evals.push_back({step, hours, e.loss});
      if (json) {
        nlohmann::json j = {{"eval_step", step}, {"eval_loss", e.loss}};
        if (e.score) {
          j["char_accuracy"] = e.score->char_accuracy();
          j["exact_accuracy"] = e.score->exact_accuracy();
        }
        json->write(j);
      }
    }
    if (opt.checkpoint_every > 0 && step % opt.checkpoint_every == 0 && step < opt.steps) {
      checkpoint(step);
    }
    if (step < opt.steps) {
      if (auto why = should_stop(stop_rule, hours, evals)) {
        stopped_because = *why;
        break;
      }
    }
  }
  // The end: a checkpoint to resume from (before flush(): with DPU it keeps the pending upload,
  // so that a resumed run computes with the weights an uninterrupted one would), the weights,
  // a sample.
  if (step > start || !opt.resume) checkpoint(step);
  trainer.flush();
  if (!stopped_because.empty()) out.line("stopped early at step ", step, ": ", stopped_because);
  if (!opt.save_weights.empty()) {
    // Every rank: the master weights are gathered from their owners (a collective).
    std::vector<NamedTensor> tensors = to_gpt2_tensors(config, *params);
    std::vector<TensorView> views;
    for (const NamedTensor& t : tensors) {
      views.push_back({t.name, DType::kF32, t.shape, std::as_bytes(std::span(t.values))});
    }
    if (rank == 0) {
      write_safetensors(opt.save_weights, views, {{"format", "pt"}, {"zoro", config.to_string()}});
      out.line("weights: ", opt.save_weights);
    }
  }
  if (opt.sample_tokens > 0 && rank == 0) {
    std::vector<std::string> prompts;
    if (data.task != nullptr) {
      prompts = data.task->sample_prompts(3, opt.seed);
    } else {
      prompts.push_back("\n");
    }
    for (const std::string& p : prompts) {
      SampleOptions so;
      so.greedy = data.task != nullptr;
      so.seed = opt.seed;
      const std::vector<std::int32_t> ids = data.tokenizer->encode(p);
      std::optional<std::string> want;  // the embedded task: the answer, and its length
      if (data.task != nullptr) want = SyntheticTask::expected_completion(p, data.task->width());
      const int n = want ? std::min<int>(opt.sample_tokens, static_cast<int>(want->size()))
                         : opt.sample_tokens;
      const std::string text = data.tokenizer->decode(model.generate(ids, n, so));
      std::string shown = p + text;
      if (want) {
        // One answer per prompt: the model's line, and what it should have been.
        shown = p + text.substr(0, text.find('\n'));
        shown += "   (expected " + p + want->substr(0, want->size() - 1) + ")";
      }
      out.line("sample: ", shown);
    }
  }
  const double secs = seconds_since(t_start);
  out.line("done: ", step - start, " steps in ", fixed(secs, 1), " s; loss ",
           fixed(first_loss.value_or(0), 4), " -> ", fixed(last_loss, 4),
           first_eval && last_eval ? "; " + describe(*first_eval) + " -> " + describe(*last_eval)
                                   : std::string());
  return 0;
}

// Launch: the device of this rank, then the communicator of all ranks. An error on one rank
// of several is printed with its rank and ends the whole job (Communicator::abort), so no
// rank is left waiting in a collective for it.
int run(const TrainOptions& opt) {
  const std::string spec = device_spec(opt);
  std::unique_ptr<device::Device> dev = device::open_device(spec);
  std::unique_ptr<comm::Communicator> comm = comm::make_communicator(*dev);
  try {
    return train(opt, spec, *dev, *comm);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    std::cerr << "zoro-train: error on rank " << comm->rank() << " of " << comm->size() << ": "
              << e.what() << std::endl;
    comm->abort(1);
    return 1;
  }
}

}  // namespace
}  // namespace zoro::train

int main(int argc, char** argv) {
  zoro::train::TrainOptions options;
  try {
    options = zoro::train::parse_train_options(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "zoro-train: " << e.what() << "\n(zoro-train --help lists the options)\n";
    return 2;
  }
  if (options.exit_now) {
    std::cout << options.help_text;
    return 0;
  }
  try {
    return zoro::train::run(options);
  } catch (const std::exception& e) {
    std::cerr << "zoro-train: error: " << e.what() << '\n';
    return 1;
  }
}

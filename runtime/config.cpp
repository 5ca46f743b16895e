#include "runtime/config.h"

#include <toml++/toml.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"
#include "runtime/base/units.h"

namespace zoro {

const char* to_string(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdam:
      return "adam";
    case OptimizerKind::kAdamW:
      return "adamw";
    case OptimizerKind::kAdagrad:
      return "adagrad";
    case OptimizerKind::kLion:
      return "lion";
  }
  return "?";
}

namespace {

OptimizerKind parse_optimizer(std::string_view text, std::string_view key) {
  for (auto kind : {OptimizerKind::kAdam, OptimizerKind::kAdamW, OptimizerKind::kAdagrad,
                    OptimizerKind::kLion}) {
    if (text == to_string(kind)) return kind;
  }
  ZORO_THROW(InvalidArgument,
             key << "='" << text << "' is not an optimizer (adam, adamw, adagrad, lion)");
}

// Reads typed values out of a parsed TOML table, remembering which keys were consumed so
// that leftovers (typos) can be reported.
class Reader {
 public:
  Reader(const toml::table& root, std::string origin) : root_(root), origin_(std::move(origin)) {}

  const toml::node* get(const std::string& key) {
    known_.insert(key);
    return root_.at_path(key).node();
  }

  [[noreturn]] void type_error(const std::string& key, const char* expected) {
    ZORO_THROW(InvalidArgument, "config " << origin_ << ": " << key << " must be " << expected);
  }

  void read(const std::string& key, double& out) {
    if (const auto* n = get(key)) {
      if (auto v = n->value<double>()) {
        out = *v;
      } else {
        type_error(key, "a number");
      }
    }
  }
  void read(const std::string& key, int& out) {
    if (const auto* n = get(key)) {
      const auto* v = n->as_integer();
      if (v == nullptr || v->get() < INT32_MIN || v->get() > INT32_MAX) {
        type_error(key, "an integer");
      }
      out = static_cast<int>(v->get());
    }
  }
  void read(const std::string& key, bool& out) {
    if (const auto* n = get(key)) {
      const auto* v = n->as_boolean();
      if (v == nullptr) type_error(key, "true or false");
      out = v->get();
    }
  }
  void read(const std::string& key, std::string& out) {
    if (const auto* n = get(key)) {
      const auto* v = n->as_string();
      if (v == nullptr) type_error(key, "a string");
      out = v->get();
    }
  }
  // A size: an integer of bytes or a string with a unit ("32MiB").
  void read_bytes(const std::string& key, std::size_t& out) {
    if (const auto* n = get(key)) {
      if (const auto* i = n->as_integer()) {
        if (i->get() < 0) {
          ZORO_THROW(InvalidArgument, "config " << origin_ << ": " << key << " = " << i->get()
                                                << " must not be negative");
        }
        out = static_cast<std::size_t>(i->get());
      } else if (const auto* s = n->as_string()) {
        out = parse_bytes(s->get(), "config " + origin_ + ": " + key);
      } else {
        type_error(key, "a size (an integer of bytes or a string such as \"32MiB\")");
      }
    }
  }
  void read_dtype(const std::string& key, DType& out) {
    std::string text;
    read(key, text);
    if (!text.empty()) out = parse_dtype(text, "config " + origin_ + ": " + key);
  }

  // Every leaf of the document that no read() asked for.
  void reject_unknown() const {
    std::vector<std::string> unknown;
    collect(root_, "", unknown);
    if (unknown.empty()) return;
    std::ostringstream known;
    bool first = true;
    for (const auto& k : known_) {
      known << (first ? "" : ", ") << k;
      first = false;
    }
    ZORO_THROW(InvalidArgument, "config " << origin_ << ": unknown key '" << unknown.front()
                                          << "' (known keys: " << known.str() << ")");
  }

 private:
  void collect(const toml::table& table, const std::string& prefix,
               std::vector<std::string>& unknown) const {
    for (const auto& [k, v] : table) {
      const std::string path =
          prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (const auto* sub = v.as_table(); sub != nullptr && !known_.contains(path)) {
        bool is_section = false;
        for (const auto& kk : known_) is_section |= kk.rfind(path + ".", 0) == 0;
        if (is_section) {
          collect(*sub, path, unknown);
          continue;
        }
      }
      if (!known_.contains(path)) unknown.push_back(path);
    }
  }

  const toml::table& root_;
  std::string origin_;
  std::set<std::string> known_;
};

void check_range(bool ok, std::string_view key, double value, std::string_view rule) {
  ZORO_CHECK(ok, "config: " << key << " = " << value << " " << rule);
}

}  // namespace

Config Config::from_toml(std::string_view text, std::string_view origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    ZORO_THROW(InvalidArgument, "config " << origin << ":" << where.line << ":" << where.column
                                          << ": " << e.description());
  }
  Config c;
  Reader r(root, std::string(origin));
  r.read("device", c.device);
  r.read_dtype("precision.dtype", c.dtype);
  r.read_dtype("precision.grad_dtype", c.grad_dtype);
  r.read_dtype("precision.moments", c.moments);
  std::string optimizer;
  r.read("optimizer.name", optimizer);
  if (!optimizer.empty()) {
    c.optimizer = parse_optimizer(optimizer, "config " + std::string(origin) + ": optimizer.name");
  }
  r.read("optimizer.lr", c.lr);
  if (const auto* betas = r.get("optimizer.betas")) {
    const auto* arr = betas->as_array();
    if (arr == nullptr || arr->size() != 2 || !arr->get(0)->value<double>() ||
        !arr->get(1)->value<double>()) {
      r.type_error("optimizer.betas", "an array of two numbers, e.g. [0.9, 0.999]");
    }
    c.beta1 = *arr->get(0)->value<double>();
    c.beta2 = *arr->get(1)->value<double>();
  }
  r.read("optimizer.eps", c.eps);
  r.read("optimizer.weight_decay", c.weight_decay);
  r.read("optimizer.clip_norm", c.clip_norm);
  r.read("loss_scale.init", c.loss_scale.init);
  r.read("loss_scale.growth_interval", c.loss_scale.growth_interval);
  r.read("loss_scale.growth_factor", c.loss_scale.growth_factor);
  r.read("loss_scale.backoff_factor", c.loss_scale.backoff_factor);
  r.read("loss_scale.min", c.loss_scale.min);
  r.read_bytes("offload.bucket_bytes", c.bucket_bytes);
  r.read("offload.bucket_count", c.bucket_count);
  r.read("offload.grad_accum_steps", c.grad_accum_steps);
  r.read("offload.dpu", c.dpu);
  r.read("offload.dpu_warmup_steps", c.dpu_warmup_steps);
  r.read_bytes("offload.host_budget", c.host_budget_bytes);
  r.read("offload.cpu_threads", c.cpu_threads);
  if (const auto* n = r.get("offload.chunk_elems")) {
    const auto* v = n->as_integer();
    if (v == nullptr || v->get() <= 0) r.type_error("offload.chunk_elems", "a positive integer");
    c.chunk_elems = static_cast<std::size_t>(v->get());
  }
  r.read("offload.trace", c.trace);
  r.reject_unknown();
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string(e.what()) + " (in " + std::string(origin) + ")");
  }
  return c;
}

Config Config::from_file(const std::string& path) { return from_toml(read_file(path), path); }

void Config::validate() const {
  ZORO_CHECK(!device.empty(), "config: device is empty (expected auto, host or cuda[:N])");
  ZORO_CHECK(grad_dtype != DType::kF32 || dtype == DType::kF32,
             "config: precision.grad_dtype = fp32 needs precision.dtype = fp32");
  ZORO_CHECK(moments != DType::kF16, "config: precision.moments = fp16 (use fp32 or bf16)");
  check_range(std::isfinite(lr) && lr > 0 && lr < 1e3, "optimizer.lr", lr, "must be in (0, 1000)");
  check_range(beta1 >= 0 && beta1 < 1, "optimizer.betas[0]", beta1, "must be in [0, 1)");
  check_range(beta2 >= 0 && beta2 < 1, "optimizer.betas[1]", beta2, "must be in [0, 1)");
  check_range(std::isfinite(eps) && eps > 0, "optimizer.eps", eps, "must be > 0");
  check_range(std::isfinite(weight_decay) && weight_decay >= 0, "optimizer.weight_decay",
              weight_decay, "must be >= 0");
  check_range(std::isfinite(clip_norm) && clip_norm >= 0, "optimizer.clip_norm", clip_norm,
              "must be >= 0 (0 disables clipping)");
  check_range(std::isfinite(loss_scale.init) && loss_scale.init >= 1, "loss_scale.init",
              loss_scale.init, "must be >= 1");
  check_range(loss_scale.growth_interval >= 1, "loss_scale.growth_interval",
              loss_scale.growth_interval, "must be >= 1");
  check_range(std::isfinite(loss_scale.growth_factor) && loss_scale.growth_factor > 1,
              "loss_scale.growth_factor", loss_scale.growth_factor, "must be > 1");
  check_range(loss_scale.backoff_factor > 0 && loss_scale.backoff_factor < 1,
              "loss_scale.backoff_factor", loss_scale.backoff_factor, "must be in (0, 1)");
  check_range(
      std::isfinite(loss_scale.min) && loss_scale.min > 0 && loss_scale.min <= loss_scale.init,
      "loss_scale.min", loss_scale.min, "must be in (0, loss_scale.init]");
  ZORO_CHECK(bucket_bytes >= 4096 && bucket_bytes <= (std::size_t{4} << 30),
             "config: offload.bucket_bytes = " << bucket_bytes << " must be in [4KiB, 4GiB]");
  check_range(bucket_count >= 1 && bucket_count <= 1024, "offload.bucket_count", bucket_count,
              "must be in [1, 1024]");
  check_range(grad_accum_steps >= 1, "offload.grad_accum_steps", grad_accum_steps, "must be >= 1");
  check_range(dpu_warmup_steps >= 0, "offload.dpu_warmup_steps", dpu_warmup_steps, "must be >= 0");
  check_range(cpu_threads >= 0 && cpu_threads <= 4096, "offload.cpu_threads", cpu_threads,
              "must be in [0, 4096] (0: the cores near the GPU)");
  ZORO_CHECK(chunk_elems >= 1024,
             "config: offload.chunk_elems = " << chunk_elems << " must be >= 1024");
  const std::size_t ram = physical_memory_bytes();
  ZORO_CHECK(host_budget_bytes <= ram,
             "config: offload.host_budget = " << format_bytes(host_budget_bytes)
                                              << " exceeds this machine's physical memory ("
                                              << format_bytes(ram) << ")");
}

std::size_t Config::effective_host_budget() const {
  return host_budget_bytes != 0 ? host_budget_bytes : physical_memory_bytes() / 5 * 4;
}

std::string Config::to_toml() const {
  std::ostringstream out;
  out.precision(17);
  out << "device = \"" << device << "\"\n\n[precision]\n"
      << "dtype = \"" << zoro::to_string(dtype) << "\"\n"
      << "grad_dtype = \"" << zoro::to_string(grad_dtype) << "\"\n"
      << "moments = \"" << zoro::to_string(moments) << "\"\n\n[optimizer]\n"
      << "name = \"" << zoro::to_string(optimizer) << "\"\n"
      << "lr = " << lr << "\nbetas = [" << beta1 << ", " << beta2 << "]\n"
      << "eps = " << eps << "\nweight_decay = " << weight_decay << "\nclip_norm = " << clip_norm
      << "\n\n[loss_scale]\ninit = " << loss_scale.init
      << "\ngrowth_interval = " << loss_scale.growth_interval
      << "\ngrowth_factor = " << loss_scale.growth_factor
      << "\nbackoff_factor = " << loss_scale.backoff_factor << "\nmin = " << loss_scale.min
      << "\n\n[offload]\nbucket_bytes = " << bucket_bytes << "\nbucket_count = " << bucket_count
      << "\ngrad_accum_steps = " << grad_accum_steps << "\ndpu = " << (dpu ? "true" : "false")
      << "\ndpu_warmup_steps = " << dpu_warmup_steps << "\nhost_budget = " << host_budget_bytes
      << "\ncpu_threads = " << cpu_threads << "\nchunk_elems = " << chunk_elems
      << "\ntrace = " << (trace ? "true" : "false") << "\n";
  return out.str();
}

std::uint64_t Config::fingerprint() const {
  // Only what changes the numerics or the state's layout; device, threads, budget and trace
  // may differ between ranks and across a resume.
  Config c = *this;
  c.device = "";
  c.cpu_threads = 0;
  c.host_budget_bytes = 0;
  c.trace = false;
  const std::string text = c.to_toml();
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace zoro

// zoro-bench-pcie: how fast do bytes cross between host and device memory, and what does
// pinning buy? (../../shared/DESIGN.md section 8, "PCIe".)
//
// For each power-of-two size from --min to --max it measures, as the median of --reps runs:
//   - pinned host -> device and device -> pinned host: Stream::copy_async (cudaMemcpyAsync on
//     CUDA) between timing events on the same stream;
//   - both directions at once, each on its own stream, both released by one start event:
//     reported per direction and as the aggregate (2 x bytes over the later finish);
//   - pageable host memory each way through Device::copy, synchronous like cudaMemcpy, timed
//     on the host clock;
// and prints GB/s (1e9 bytes per second) and the pinned / pageable ratio.
//
// On the host backend every "copy" is a memcpy between two host buffers: the figures are
// memory bandwidth, not PCIe, and the output says so.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/common/report.h"
#include "runtime/base/error.h"
#include "runtime/base/units.h"
#include "runtime/device/device.h"

namespace {

using zoro::device::Buffer;
using zoro::device::Device;
using zoro::device::Event;
using zoro::device::MemoryKind;
using zoro::device::Stream;

constexpr const char* kUsage =
    "usage: zoro-bench-pcie [--device SPEC] [--min SIZE] [--max SIZE] [--reps N] [--json FILE]\n"
    "\n"
    "Copy bandwidth between host and device memory: pinned vs pageable, each way and both\n"
    "ways at once, for every power-of-two size from --min to --max.\n"
    "\n"
    "  --device SPEC  auto (default: cuda:0 if a GPU is usable, else the host backend with a\n"
    "                 device heap of 2 x --max), cuda:N, or host:mem=SIZE (e.g. host:mem=4GiB)\n"
    "  --min SIZE     smallest copy (default 1MiB); SIZE like 64KiB, 1MiB, 1GiB\n"
    "  --max SIZE     largest copy (default 1GiB)\n"
    "  --reps N       repetitions per figure; the median is reported (default 10)\n"
    "  --json FILE    also write the results and the run context as JSON\n"
    "  --help         this text\n";

struct Options {
  bool help = false;
  std::string device = "auto";
  std::size_t min_bytes = zoro::kMiB;
  std::size_t max_bytes = zoro::kGiB;
  int reps = 10;
  std::string json;
};

// Bad command lines exit with status 2 and a message naming the problem.
struct UsageError {
  std::string message;
};

bool is_power_of_two(std::size_t n) { return n > 0 && (n & (n - 1)) == 0; }

Options parse_args(int argc, char** argv) {
  Options options;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view flag = args[i];
    std::optional<std::string_view> inline_value;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "--help" || flag == "-h") {
      options.help = true;
      return options;
    }
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) throw UsageError{std::string(flag) + " needs a value"};
      return args[++i];
    };
    try {
      if (flag == "--device") {
        options.device = std::string(value());
      } else if (flag == "--min") {
        options.min_bytes = zoro::parse_bytes(value(), "--min");
      } else if (flag == "--max") {
        options.max_bytes = zoro::parse_bytes(value(), "--max");
      } else if (flag == "--reps") {
        const std::string text(value());
        char* end = nullptr;
        const long reps = std::strtol(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0' || reps < 1 || reps > 100000) {
          throw UsageError{"--reps '" + text + "' is not a whole number from 1 to 100000"};
        }
        options.reps = static_cast<int>(reps);
      } else if (flag == "--json") {
        options.json = std::string(value());
      } else {
        throw UsageError{"unknown flag '" + std::string(args[i]) + "'"};
      }
    } catch (const zoro::InvalidArgument& e) {
      throw UsageError{e.what()};
    }
  }
  if (options.min_bytes == 0 || !is_power_of_two(options.min_bytes) ||
      !is_power_of_two(options.max_bytes)) {
    throw UsageError{"--min and --max must be powers of two (got " +
                     std::to_string(options.min_bytes) + " and " +
                     std::to_string(options.max_bytes) + " B)"};
  }
  if (options.min_bytes > options.max_bytes) {
    throw UsageError{"--min (" + zoro::format_bytes(options.min_bytes) +
                     ") is larger than --max (" + zoro::format_bytes(options.max_bytes) + ")"};
  }
  return options;
}

double gbps(std::size_t bytes, double ms) { return ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0; }

// The buffers of one run, each of --max bytes, touched once so that first-touch page faults
// (host memory) do not land in the first measurement.
struct Buffers {
  Buffer pinned_src, pinned_dst;      // H2D source, D2H destination
  Buffer device_dst, device_src;      // H2D destination, D2H source
  Buffer pageable_src, pageable_dst;  // the pageable pair

  Buffers(Device& device, std::size_t bytes) {
    pinned_src = device.allocate(MemoryKind::kPinnedHost, bytes);
    pinned_dst = device.allocate(MemoryKind::kPinnedHost, bytes);
    device_dst = device.allocate(MemoryKind::kDevice, bytes);
    device_src = device.allocate(MemoryKind::kDevice, bytes);
    pageable_src = device.allocate(MemoryKind::kPageableHost, bytes);
    pageable_dst = device.allocate(MemoryKind::kPageableHost, bytes);
    for (Buffer* b : {&pinned_src, &pinned_dst, &pageable_src, &pageable_dst}) {
      std::memset(b->data(), 0x5a, bytes);
    }
    auto stream = device.create_stream({.name = "touch"});
    stream->memset_async(device_dst.data(), 0x11, bytes);
    stream->memset_async(device_src.data(), 0x22, bytes);
    stream->synchronize();
  }
};

// Median milliseconds of `reps` runs of `copy` (a function that enqueues one copy on
// `stream`), timed by events around it on that stream.
template <class Copy>
double time_async(Device& device, Stream& stream, int reps, Copy&& copy) {
  auto start = device.create_event({.timing = true});
  auto end = device.create_event({.timing = true});
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    start->record(stream);
    copy();
    end->record(stream);
    end->synchronize();
    ms.push_back(end->elapsed_ms_since(*start));
  }
  stream.synchronize();  // rethrows a failed copy, if any
  return zoro::bench::median(ms);
}

// Median milliseconds of a synchronous call, on the host's steady clock.
template <class Copy>
double time_sync(int reps, Copy&& copy) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    copy();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return zoro::bench::median(ms);
}

struct Row {
  std::size_t bytes = 0;
  double h2d_pinned_ms = 0, d2h_pinned_ms = 0;
  double h2d_pageable_ms = 0, d2h_pageable_ms = 0;
  double bidir_h2d_ms = 0, bidir_d2h_ms = 0, bidir_total_ms = 0;
};

Row measure(Device& device, Stream& up, Stream& down, Buffers& b, std::size_t bytes, int reps) {
  Row row;
  row.bytes = bytes;
  auto h2d = [&] { up.copy_async(b.device_dst.data(), b.pinned_src.data(), bytes); };
  auto d2h = [&] { down.copy_async(b.pinned_dst.data(), b.device_src.data(), bytes); };
  // One untimed copy each way first: the first use of a size can pay for mappings.
  h2d();
  d2h();
  up.synchronize();
  down.synchronize();

  row.h2d_pinned_ms = time_async(device, up, reps, h2d);
  row.d2h_pinned_ms = time_async(device, down, reps, d2h);

  // Both at once: `go` is recorded on `up`; `down` waits for it, so both copies are released
  // by the same point and each direction's time is measured from it.
  {
    auto go = device.create_event({.timing = true});
    auto up_done = device.create_event({.timing = true});
    auto down_done = device.create_event({.timing = true});
    std::vector<double> up_ms, down_ms, total_ms;
    for (int r = 0; r < reps; ++r) {
      go->record(up);
      down.wait(*go);
      h2d();
      d2h();
      up_done->record(up);
      down_done->record(down);
      up_done->synchronize();
      down_done->synchronize();
      const double u = up_done->elapsed_ms_since(*go);
      const double d = down_done->elapsed_ms_since(*go);
      up_ms.push_back(u);
      down_ms.push_back(d);
      total_ms.push_back(std::max(u, d));
    }
    up.synchronize();
    down.synchronize();
    row.bidir_h2d_ms = zoro::bench::median(up_ms);
    row.bidir_d2h_ms = zoro::bench::median(down_ms);
    row.bidir_total_ms = zoro::bench::median(total_ms);
  }

  row.h2d_pageable_ms =
      time_sync(reps, [&] { device.copy(b.device_dst.data(), b.pageable_src.data(), bytes); });
  row.d2h_pageable_ms =
      time_sync(reps, [&] { device.copy(b.pageable_dst.data(), b.device_src.data(), bytes); });
  return row;
}

int run(const Options& options) {
  if (options.help) {
    std::cout << kUsage;
    return 0;
  }
  std::string spec = options.device;
  if (spec == "auto") {
    // The host backend needs a device heap for two --max buffers.
    spec = zoro::device::cuda_device_count() > 0
               ? std::string("cuda:0")
               : "host:mem=" + std::to_string(2 * options.max_bytes);
  }
  // Six buffers of --max bytes live at once (pinned, device and pageable pairs); on the host
  // backend all six are host memory. Refuse up front what the machine cannot hold.
  const std::size_t ram = zoro::physical_memory_bytes();
  const bool host_backend = spec.rfind("host", 0) == 0;
  const std::size_t host_bytes = (host_backend ? 6 : 4) * options.max_bytes;
  if (host_bytes > ram / 2) {
    throw UsageError{"--max " + zoro::format_bytes(options.max_bytes) + " needs " +
                     zoro::format_bytes(host_bytes) + " of host memory; this machine has " +
                     zoro::format_bytes(ram) + " (the benchmark uses at most half)"};
  }

  std::unique_ptr<Device> device = zoro::device::open_device(spec);
  const auto& info = device->info();
  const bool memcpy_only = device->backend() == zoro::device::BackendKind::kHost;

  std::cout << "zoro-bench-pcie: " << info.spec << " (" << info.name << ")";
  if (!info.pci_bus_id.empty()) std::cout << ", PCI " << info.pci_bus_id;
  std::cout << ", NUMA node " << info.numa_node << "; " << options.reps
            << " reps per figure, medians; GB/s = 1e9 B/s\n";
  if (memcpy_only) {
    std::cout << "NOTE: host backend: every copy below is a memcpy between host buffers. These "
                 "are memory-bandwidth figures, NOT PCIe.\n";
  }
  std::cout << std::flush;

  Buffers buffers(*device, options.max_bytes);
  auto up = device->create_stream({.name = "h2d", .priority = zoro::device::StreamPriority::kHigh});
  auto down =
      device->create_stream({.name = "d2h", .priority = zoro::device::StreamPriority::kHigh});

  zoro::bench::Table table({"size", "H2D pinned", "H2D pageable", "H2D ratio", "D2H pinned",
                            "D2H pageable", "D2H ratio", "both: H2D", "both: D2H", "both: total"});
  nlohmann::json results = nlohmann::json::array();
  for (std::size_t bytes = options.min_bytes; bytes <= options.max_bytes; bytes *= 2) {
    const Row r = measure(*device, *up, *down, buffers, bytes, options.reps);
    const double h2d = gbps(bytes, r.h2d_pinned_ms), h2d_pageable = gbps(bytes, r.h2d_pageable_ms);
    const double d2h = gbps(bytes, r.d2h_pinned_ms), d2h_pageable = gbps(bytes, r.d2h_pageable_ms);
    const double both_up = gbps(bytes, r.bidir_h2d_ms), both_down = gbps(bytes, r.bidir_d2h_ms);
    const double both_total = gbps(2 * bytes, r.bidir_total_ms);
    using zoro::bench::fmt;
    table.add_row({zoro::format_bytes(bytes), fmt("%.2f", h2d), fmt("%.2f", h2d_pageable),
                   fmt("%.2fx", h2d / h2d_pageable), fmt("%.2f", d2h), fmt("%.2f", d2h_pageable),
                   fmt("%.2fx", d2h / d2h_pageable), fmt("%.2f", both_up), fmt("%.2f", both_down),
                   fmt("%.2f", both_total)});
    results.push_back({{"bytes", bytes},
                       {"h2d_pinned_gbps", h2d},
                       {"h2d_pinned_ms", r.h2d_pinned_ms},
                       {"h2d_pageable_gbps", h2d_pageable},
                       {"h2d_pageable_ms", r.h2d_pageable_ms},
                       {"h2d_pinned_over_pageable", h2d / h2d_pageable},
                       {"d2h_pinned_gbps", d2h},
                       {"d2h_pinned_ms", r.d2h_pinned_ms},
                       {"d2h_pageable_gbps", d2h_pageable},
                       {"d2h_pageable_ms", r.d2h_pageable_ms},
                       {"d2h_pinned_over_pageable", d2h / d2h_pageable},
                       {"bidir_h2d_gbps", both_up},
                       {"bidir_d2h_gbps", both_down},
                       {"bidir_total_gbps", both_total},
                       {"bidir_total_ms", r.bidir_total_ms}});
  }
  std::cout << "GB/s; ratio = pinned / pageable; \"both\": the two directions at once on two "
               "streams (total = 2 x size / the later finish)\n\n"
            << table.render();

  nlohmann::json doc;
  doc["benchmark"] = "pcie";
  doc["context"] = zoro::bench::run_context();
  doc["context"]["device"] = {{"backend", zoro::device::to_string(info.backend)},
                              {"name", info.name},
                              {"spec", info.spec},
                              {"ordinal", info.ordinal},
                              {"pci_bus_id", info.pci_bus_id},
                              {"numa_node", info.numa_node},
                              {"memory_capacity_bytes", info.memory_capacity_bytes}};
  doc["memcpy_not_pcie"] = memcpy_only;
  doc["options"] = {{"device", options.device},       {"min_bytes", options.min_bytes},
                    {"max_bytes", options.max_bytes}, {"reps", options.reps},
                    {"statistic", "median"},          {"gbps_unit", "1e9 bytes per second"}};
  doc["results"] = std::move(results);
  zoro::bench::write_json(options.json, doc);
  if (!options.json.empty()) std::cout << "\nwrote " << options.json << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "zoro-bench-pcie: " << e.message << "\n(see zoro-bench-pcie --help)\n";
    return 2;
  } catch (const zoro::InvalidArgument& e) {
    std::cerr << "zoro-bench-pcie: " << e.what() << "\n";
    return 2;
  } catch (const zoro::OutOfMemory& e) {
    std::cerr << "zoro-bench-pcie: " << e.what()
              << "\n(the run needs two --max buffers of each kind; on the host backend give the "
                 "device heap room: --device host:mem=SIZE with SIZE >= 2 x --max)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zoro-bench-pcie: " << e.what() << "\n";
    return 1;
  }
}

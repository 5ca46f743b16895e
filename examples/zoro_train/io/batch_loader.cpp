#include "examples/zoro_train/io/batch_loader.h"

#include <chrono>
#include <span>

#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace zoro::train {

void LoadedBatch::wait_ready(device::Stream& compute) const {
  ZORO_CHECK(copied_ != nullptr, "wait_ready on an empty LoadedBatch");
  compute.wait(*copied_);
}

bool LoadedBatch::ready() const { return copied_ != nullptr && copied_->query(); }

BatchLoader::BatchLoader(device::Device& device, const BatchSource& source,
                         BatchLoaderOptions options)
    : device_(device), source_(source), options_(std::move(options)) {
  ZORO_CHECK(options_.batch > 0 && options_.seq_len > 0,
             "batch loader: batch " << options_.batch << " x seq_len " << options_.seq_len
                                    << ": both must be positive");
  ZORO_CHECK(options_.depth >= 2 && options_.depth <= 4096,
             "batch loader: depth " << options_.depth << " must be in [2, 4096]");
  ZORO_CHECK(options_.grad_accum > 0,
             "batch loader: grad_accum " << options_.grad_accum << " must be positive");
  ZORO_CHECK(options_.first_step >= 0,
             "batch loader: first_step " << options_.first_step << " is negative");
  ZORO_CHECK(options_.world_size > 0 && options_.rank >= 0 && options_.rank < options_.world_size,
             "batch loader: rank " << options_.rank
                                   << " outside [0, world_size=" << options_.world_size << ")");
  slot_elems_ =
      static_cast<std::size_t>(options_.batch) * static_cast<std::size_t>(options_.seq_len);
  const std::size_t slot_bytes = 2 * slot_elems_ * sizeof(std::int32_t);
  const auto depth = static_cast<std::size_t>(options_.depth);
  // The capped device memory first: a batch too large fails before pinning host memory.
  device_memory_ = device_.allocate(device::MemoryKind::kDevice, depth * slot_bytes);
  pinned_ = device_.allocate(device::MemoryKind::kPinnedHost, depth * slot_bytes);
  copy_stream_ = device_.create_stream({.name = options_.stream_name});
  slots_.resize(depth);
  for (std::size_t k = 0; k < depth; ++k) {
    Slot& s = slots_[k];
    s.host = pinned_.as<std::int32_t>() + k * 2 * slot_elems_;
    s.device = device_memory_.as<std::int32_t>() + k * 2 * slot_elems_;
    s.copied = device_.create_event();
    s.released = device_.create_event();
    free_.push_back(static_cast<int>(k));
  }
  producer_ = std::thread([this] { produce(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
  try {
    copy_stream_->synchronize();
  } catch (const std::exception& e) {
    ZORO_LOG(kWarn) << "batch loader: copy stream error at shutdown: " << e.what();
  }
  // Released slots may still be read by compute work: their memory outlives it.
  for (const Slot& s : slots_) s.released->synchronize();
}

void BatchLoader::produce() {
  std::int64_t step = options_.first_step;
  int micro = 0;
  try {
    for (;;) {
      int k = -1;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !free_.empty(); });
        if (stop_) return;
        k = free_.front();
        free_.pop_front();
      }
      Slot& s = slots_[static_cast<std::size_t>(k)];
      s.copied->synchronize();  // the previous copy out of the pinned buffer has finished
      const std::span<std::int32_t> host(s.host, 2 * slot_elems_);
      const BatchKey key{.seed = options_.seed,
                         .rank = options_.rank,
                         .world_size = options_.world_size,
                         .step = step,
                         .micro_step = micro};
      source_.make_batch(options_.split, key, options_.batch, options_.seq_len,
                         host.first(slot_elems_), host.last(slot_elems_));
      copy_stream_->wait(*s.released);  // Note [Batch slot lifetime]
      copy_stream_->copy_async_labelled("batch " + std::to_string(step) + "." +
                                            std::to_string(micro) + " slot " + std::to_string(k),
                                        s.device, s.host, 2 * slot_elems_ * sizeof(std::int32_t));
      s.copied->record(*copy_stream_);
      {
        std::lock_guard lock(mutex_);
        ready_.push_back({k, step, micro});
      }
      cv_.notify_all();
      if (++micro == options_.grad_accum) {
        micro = 0;
        ++step;
      }
    }
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

LoadedBatch BatchLoader::next() {
  ZORO_CHECK(held_ < options_.depth, "batch loader: all "
                                         << options_.depth
                                         << " slots are held by the consumer; release() a batch "
                                            "before asking for the next one");
  const auto t0 = std::chrono::steady_clock::now();
  Ready r{};
  {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !ready_.empty() || error_ != nullptr; });
    if (ready_.empty()) std::rethrow_exception(error_);
    r = ready_.front();
    ready_.pop_front();
  }
  const double wait_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  total_wait_ms_ += wait_ms;
  ++served_;
  Slot& s = slots_[static_cast<std::size_t>(r.slot)];
  s.held = true;
  s.ticket = next_ticket_++;
  ++held_;
  LoadedBatch b;
  b.inputs = s.device;
  b.targets = s.device + slot_elems_;
  b.host_inputs = s.host;
  b.host_targets = s.host + slot_elems_;
  b.batch = options_.batch;
  b.seq_len = options_.seq_len;
  b.step = r.step;
  b.micro_step = r.micro_step;
  b.wait_ms = wait_ms;
  b.slot_ = r.slot;
  b.ticket_ = s.ticket;
  b.copied_ = s.copied.get();
  return b;
}

void BatchLoader::release(const LoadedBatch& batch, device::Stream& compute) {
  ZORO_CHECK(batch.slot_ >= 0 && batch.slot_ < options_.depth,
             "batch loader: release of a batch that is not from this loader");
  Slot& s = slots_[static_cast<std::size_t>(batch.slot_)];
  ZORO_CHECK(s.held && s.ticket == batch.ticket_ && batch.copied_ == s.copied.get(),
             "batch loader: batch of step " << batch.step << "." << batch.micro_step
                                            << " released twice or not from this loader");
  s.released->record(compute);
  s.held = false;
  --held_;
  {
    std::lock_guard lock(mutex_);
    free_.push_back(batch.slot_);
  }
  cv_.notify_all();
}

}  // namespace zoro::train

// The host backend's streams: one FIFO worker thread each (see host_device.h).
#include <pthread.h>

#include <cstring>
#include <sstream>
#include <utility>

#include "runtime/base/check.h"
#include "runtime/device/host/host_device.h"

namespace zoro::device::host {

namespace {

// The stream whose worker is the current thread, or null on any other thread. Lets the
// synchronising calls refuse to run inside a task (they would wait on themselves).
thread_local const StreamCore* tls_current_stream = nullptr;

// Adds where a stored error came from, keeping its zoro category so callers can still catch
// by type (Note [Stream errors]: the original message is kept whole, at the front).
std::exception_ptr annotate(std::exception_ptr error, const std::string& stream,
                            const std::string& label) {
  const std::string where = " [raised by task '" + label + "' on stream '" + stream + "']";
  try {
    std::rethrow_exception(std::move(error));
  } catch (const BackendError& e) {
    return std::make_exception_ptr(BackendError(e.what() + where, e.library(), e.code()));
  } catch (const InvalidArgument& e) {
    return std::make_exception_ptr(InvalidArgument(e.what() + where));
  } catch (const OutOfMemory& e) {
    return std::make_exception_ptr(OutOfMemory(e.what() + where));
  } catch (const IoError& e) {
    return std::make_exception_ptr(IoError(e.what() + where));
  } catch (const Unsupported& e) {
    return std::make_exception_ptr(Unsupported(e.what() + where));
  } catch (const std::exception& e) {
    // zoro::Error itself, and foreign exceptions: the public API throws only the zoro family.
    return std::make_exception_ptr(Error(e.what() + where));
  } catch (...) {
    return std::make_exception_ptr(Error("unknown exception" + where));
  }
}

}  // namespace

void check_not_on_worker(const char* what) {
  if (tls_current_stream != nullptr) {
    ZORO_THROW(InvalidArgument, what << " called from a task of stream '"
                                     << tls_current_stream->name()
                                     << "': a stream task must not synchronise (it would wait on "
                                        "itself; CUDA forbids it in host functions)");
  }
}

// --- StreamCore -----------------------------------------------------------------------------

StreamCore::StreamCore(std::string name, Trace* trace)
    : name_(std::move(name)), trace_(trace), worker_([this] { run(); }) {}

StreamCore::~StreamCore() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  if (worker_.joinable()) worker_.join();
}

void StreamCore::submit(Task task) {
  {
    std::lock_guard lock(mutex_);
    ZORO_ASSERT(!stopping_);
    queue_.push_back(std::move(task));
    ++submitted_;
  }
  work_cv_.notify_one();
}

void StreamCore::drain() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  idle_cv_.wait(lock, [&] { return completed_ >= target; });
}

std::exception_ptr StreamCore::take_error() {
  std::lock_guard lock(mutex_);
  return std::exchange(error_, nullptr);
}

bool StreamCore::idle() const {
  std::lock_guard lock(mutex_);
  return completed_ == submitted_;
}

void StreamCore::store_error(std::exception_ptr error, const std::string& label) {
  error = annotate(std::move(error), name_, label);
  {
    std::lock_guard lock(mutex_);
    if (!error_) {
      error_ = std::move(error);
      return;
    }
  }
  // Keep the first error (the later ones are usually its consequences); say that we dropped one.
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    ZORO_LOG(kWarn) << "stream '" << name_
                    << "': an error is already stored; dropping: " << e.what();
  }
}

void StreamCore::run() {
  tls_current_stream = this;
  // Named after the stream, for debuggers and profilers (Linux keeps 15 characters).
  ::pthread_setname_np(::pthread_self(), ("zoro:" + name_).substr(0, 15).c_str());
  while (true) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping, and everything submitted has run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    const Trace::Span span = task.traced && trace_ != nullptr ? trace_->begin() : Trace::Span{};
    try {
      task.fn();
    } catch (...) {
      store_error(std::current_exception(), task.label);
    }
    if (span.active) {
      try {
        trace_->end(span, name_, task.label);
      } catch (...) {
        store_error(std::current_exception(), "trace of " + task.label);
      }
    }
    // Release what the task captured before reporting completion: a waiter may then free it.
    task = Task{};
    {
      std::lock_guard lock(mutex_);
      ++completed_;
    }
    idle_cv_.notify_all();
  }
  tls_current_stream = nullptr;
}

// --- HostStream -----------------------------------------------------------------------------

HostStream::HostStream(HostDevice* device, std::string name, StreamPriority priority)
    : device_(device),
      priority_(priority),
      core_(std::make_shared<StreamCore>(std::move(name), device->trace())) {
  device_->add_stream(core_);
}

HostStream::~HostStream() {
  device_->remove_stream(core_.get());
  core_->drain();
  if (std::exception_ptr error = core_->take_error()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      ZORO_LOG(kWarn) << "stream '" << core_->name()
                      << "' destroyed with an error never rethrown by synchronize(): " << e.what();
    }
  }
  // core_'s destructor joins the worker (Device::synchronize may briefly hold the last ref).
}

void HostStream::copy_async(void* dst, const void* src, std::size_t bytes) {
  copy_async_labelled("copy " + std::to_string(bytes) + " B", dst, src, bytes);
}

void HostStream::copy_async_labelled(std::string label, void* dst, const void* src,
                                     std::size_t bytes) {
  if (bytes == 0) return;
  device_->check_async_range(dst, bytes, "copy_async destination");
  device_->check_async_range(src, bytes, "copy_async source");
  check_no_overlap(dst, src, bytes, "copy_async");
  core_->submit(Task{std::move(label), [dst, src, bytes] { std::memcpy(dst, src, bytes); }, true});
}

void HostStream::memset_async(void* dst, int value, std::size_t bytes) {
  if (bytes == 0) return;
  device_->check_async_range(dst, bytes, "memset_async destination");
  core_->submit(Task{"memset " + std::to_string(bytes) + " B",
                     [dst, value, bytes] { std::memset(dst, value, bytes); }, true});
}

void HostStream::wait(const Event& event) {
  const auto* host_event = dynamic_cast<const HostEvent*>(&event);
  ZORO_CHECK(host_event != nullptr,
             "stream '" << name() << "' cannot wait on an event of another backend");
  ZORO_CHECK(host_event->device() == device_,
             "stream '" << name() << "' cannot wait on an event of another device");
  std::shared_ptr<EventState> state = host_event->state();
  std::uint64_t version = 0;
  {
    std::lock_guard lock(state->mutex);
    version = state->recorded;
    // Already complete (or never recorded): nothing to wait for, now or ever.
    if (state->complete_locked(version)) return;
  }
  core_->submit(
      Task{"wait", [state = std::move(state), version] { state->wait_for(version); }, false});
}

void HostStream::launch_host_fn(std::string label, std::function<void()> fn) {
  ZORO_CHECK(fn != nullptr,
             "launch_host_fn('" << label << "') on stream '" << name() << "': empty function");
  core_->submit(Task{std::move(label), std::move(fn), true});
}

void HostStream::synchronize() {
  check_not_on_worker("Stream::synchronize");
  core_->drain();
  if (std::exception_ptr error = core_->take_error()) std::rethrow_exception(error);
}

bool HostStream::query() const { return core_->idle(); }

}  // namespace zoro::device::host

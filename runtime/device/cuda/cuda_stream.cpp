// CUDA streams: priorities, async copies and memsets, event waits, host functions with stored
// errors (Note [Stream errors] in device.h, Note [Host functions on CUDA] in cuda_internal.h).
#include <cstring>
#include <utility>

#include "runtime/base/cuda_check.h"
#include "runtime/device/cuda/cuda_internal.h"

namespace zoro::device::cuda {

// --- DeviceGuard ---------------------------------------------------------------------------

DeviceGuard::DeviceGuard(int ordinal) {
  ZORO_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != ordinal) {
    ZORO_CUDA_CHECK(cudaSetDevice(ordinal));
    switched_ = true;
  }
}

DeviceGuard::DeviceGuard(int ordinal, NoThrow) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    // Unknown previous device: switch without restoring, and clear the error we caused.
    (void)cudaGetLastError();
    previous_ = -1;
  }
  if (previous_ != ordinal) {
    ZORO_CUDA_CHECK_NOTHROW(cudaSetDevice(ordinal));
    switched_ = previous_ >= 0;
  }
}

DeviceGuard::~DeviceGuard() {
  if (switched_) ZORO_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
}

// --- HostFnState ---------------------------------------------------------------------------

void HostFnState::store_error(std::exception_ptr error, const std::string& label) noexcept {
  std::lock_guard lock(mutex_);
  if (!error_) {
    error_ = std::move(error);
    ZORO_LOG(kInfo) << "host function '" << label
                    << "' failed; its error is stored for the stream's next synchronize";
    return;
  }
  // The first error is the cause; a later one is usually its consequence.
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    ZORO_LOG(kWarn) << "host function '" << label << "' failed after an earlier stored error; "
                    << "dropping: " << e.what();
  } catch (...) {
    ZORO_LOG(kWarn) << "host function '" << label << "' failed after an earlier stored error; "
                    << "dropping a non-standard exception";
  }
}

std::exception_ptr HostFnState::take_error() noexcept {
  std::lock_guard lock(mutex_);
  return std::exchange(error_, nullptr);
}

void HostFnState::retire(std::unique_ptr<Closure> closure) noexcept {
  std::lock_guard lock(mutex_);
  try {
    retired_.push_back(std::move(closure));
  } catch (...) {
    // Out of memory on the callback thread: leak the closure rather than destroy it here,
    // where its captures' destructors could call CUDA.
    (void)closure.release();
  }
}

void HostFnState::drain_retired() noexcept {
  std::vector<std::unique_ptr<Closure>> done;
  {
    std::lock_guard lock(mutex_);
    done.swap(retired_);
  }
  // Destroyed here, outside the lock: a capture's destructor may call into the device layer.
}

namespace {

// The cudaLaunchHostFunc callback. Runs on a CUDA-owned thread that must not call CUDA: it
// only runs the user's function, keeps what it throws and retires the closure.
void CUDART_CB run_host_fn(void* data) {
  std::unique_ptr<HostFnState::Closure> closure(static_cast<HostFnState::Closure*>(data));
  try {
    closure->fn();
  } catch (...) {
    closure->state->store_error(std::current_exception(), closure->label);
  }
  HostFnState* state = closure->state;
  state->retire(std::move(closure));
}

bool ranges_overlap(const void* a, const void* b, std::size_t bytes) {
  const auto x = reinterpret_cast<std::uintptr_t>(a);
  const auto y = reinterpret_cast<std::uintptr_t>(b);
  return x < y + bytes && y < x + bytes;
}

}  // namespace

// --- StreamCore ----------------------------------------------------------------------------

StreamCore::StreamCore(int ordinal_in, cudaStream_t stream_in, std::string name_in)
    : ordinal(ordinal_in), stream(stream_in), name(std::move(name_in)) {}

StreamCore::~StreamCore() {
  DeviceGuard guard(ordinal, DeviceGuard::NoThrow{});
  // Every host function has returned (and retired its closure) once this returns.
  ZORO_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(stream));
  host_fns.drain_retired();
  if (auto error = host_fns.take_error()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      ZORO_LOG(kWarn) << "stream '" << name << "' destroyed with an unreported error: " << e.what();
    } catch (...) {
      ZORO_LOG(kWarn) << "stream '" << name << "' destroyed with an unreported error";
    }
  }
  ZORO_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream));
}

// --- CudaStream ----------------------------------------------------------------------------

CudaStream::CudaStream(CudaDevice& device, std::shared_ptr<StreamCore> core,
                       StreamPriority priority)
    : device_(device), core_(std::move(core)), priority_(priority) {}

CudaStream::~CudaStream() {
  {
    // device.h: destroying a stream waits for its pending work, even while a concurrent
    // Device::synchronize still holds the core.
    DeviceGuard guard(core_->ordinal, DeviceGuard::NoThrow{});
    ZORO_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(core_->stream));
  }
  device_.forget_stream(core_.get());
}

void CudaStream::copy_async(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  // The same classification as the host backend: a pageable side would make cudaMemcpyAsync
  // silently synchronous (staged through a driver buffer), which breaks overlap unnoticed.
  const MemoryKind dst_kind = device_.memory_kind_of(dst, bytes);
  const MemoryKind src_kind = device_.memory_kind_of(src, bytes);
  ZORO_CHECK(dst_kind != MemoryKind::kPageableHost,
             "copy_async on stream '" << name() << "': the destination (" << dst << ", " << bytes
                                      << " B) is pageable host memory; async copies need device "
                                         "or pinned memory of this device (Device::copy takes "
                                         "pageable memory)");
  ZORO_CHECK(src_kind != MemoryKind::kPageableHost,
             "copy_async on stream '" << name() << "': the source (" << src << ", " << bytes
                                      << " B) is pageable host memory; async copies need device "
                                         "or pinned memory of this device (Device::copy takes "
                                         "pageable memory)");
  ZORO_CHECK(!ranges_overlap(dst, src, bytes), "copy_async on stream '"
                                                   << name() << "': source and destination of "
                                                   << bytes << " B overlap");
  DeviceGuard guard(core_->ordinal);
  ZORO_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, core_->stream));
}

void CudaStream::memset_async(void* dst, int value, std::size_t bytes) {
  if (bytes == 0) return;
  const MemoryKind kind = device_.memory_kind_of(dst, bytes);
  switch (kind) {
    case MemoryKind::kDevice: {
      DeviceGuard guard(core_->ordinal);
      ZORO_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, core_->stream));
      return;
    }
    case MemoryKind::kPinnedHost:
      // Registered memory is mapped under UVA, so cudaMemsetAsync could write it, but from
      // the GPU across PCIe, competing with the copies this memory exists for. The host
      // writes it instead, in stream order.
      launch_host_fn("memset", [dst, value, bytes] { std::memset(dst, value, bytes); });
      return;
    case MemoryKind::kPageableHost:
      break;
  }
  ZORO_THROW(InvalidArgument, "memset_async on stream '"
                                  << name() << "': the destination (" << dst << ", " << bytes
                                  << " B) is pageable host memory; it needs device or pinned "
                                     "memory of this device");
}

void CudaStream::wait(const Event& event) {
  const auto* cuda_event = dynamic_cast<const CudaEvent*>(&event);
  ZORO_CHECK(cuda_event != nullptr,
             "stream '" << name() << "' cannot wait for an event of another backend");
  cuda_event->enqueue_wait(*this);
}

void CudaStream::launch_host_fn(std::string label, std::function<void()> fn) {
  ZORO_CHECK(static_cast<bool>(fn), "launch_host_fn('" << label << "'): empty function");
  core_->host_fns.drain_retired();
  auto closure = std::make_unique<HostFnState::Closure>(
      HostFnState::Closure{std::move(label), std::move(fn), &core_->host_fns});
  DeviceGuard guard(core_->ordinal);
  ZORO_CUDA_CHECK(cudaLaunchHostFunc(core_->stream, &run_host_fn, closure.get()));
  // Enqueued: the callback owns it now (it retires it to host_fns when done).
  (void)closure.release();
}

void CudaStream::synchronize() {
  {
    DeviceGuard guard(core_->ordinal);
    ZORO_CUDA_CHECK(cudaStreamSynchronize(core_->stream));
  }
  core_->host_fns.drain_retired();
  if (auto error = core_->host_fns.take_error()) std::rethrow_exception(error);
}

bool CudaStream::query() const {
  DeviceGuard guard(core_->ordinal);
  const cudaError_t status = cudaStreamQuery(core_->stream);
  if (status == cudaSuccess) return true;
  if (status == cudaErrorNotReady) {
    // Not a failure; clear it so that a later cudaGetLastError (a kernel launch check) does
    // not report it.
    (void)cudaGetLastError();
    return false;
  }
  ZORO_CUDA_CHECK(status);
  return false;
}

}  // namespace zoro::device::cuda

// CUDA events with device.h's versioning. CUDA's own semantics already match it:
// cudaStreamWaitEvent, cudaEventQuery and cudaEventSynchronize act on the most recent
// cudaEventRecord at the time of the call, and an event never recorded counts as complete.
// We add the version counter (device.h's Event::version) and argument checks.
#include "runtime/base/cuda_check.h"
#include "runtime/device/cuda/cuda_internal.h"

namespace zoro::device::cuda {

CudaEvent::CudaEvent(int ordinal, bool timing) : ordinal_(ordinal), timing_(timing) {
  DeviceGuard guard(ordinal_);
  // Timing costs a timestamp write per record; only events asked for it pay.
  ZORO_CUDA_CHECK(
      cudaEventCreateWithFlags(&event_, timing_ ? cudaEventDefault : cudaEventDisableTiming));
}

CudaEvent::~CudaEvent() {
  // CUDA defers the release of an event still pending until it completes.
  DeviceGuard guard(ordinal_, DeviceGuard::NoThrow{});
  ZORO_CUDA_CHECK_NOTHROW(cudaEventDestroy(event_));
}

void CudaEvent::record(Stream& stream) {
  auto* cuda_stream = dynamic_cast<CudaStream*>(&stream);
  ZORO_CHECK(cuda_stream != nullptr, "cannot record a CUDA event on a stream of another backend");
  // cudaEventRecord needs the stream and the event in the same context.
  ZORO_CHECK(cuda_stream->ordinal() == ordinal_,
             "cannot record an event of cuda:" << ordinal_ << " on stream '" << stream.name()
                                               << "' of cuda:" << cuda_stream->ordinal());
  std::lock_guard lock(mutex_);
  DeviceGuard guard(ordinal_);
  ZORO_CUDA_CHECK(cudaEventRecord(event_, cuda_stream->handle()));
  version_.fetch_add(1, std::memory_order_acq_rel);
}

bool CudaEvent::query() const {
  DeviceGuard guard(ordinal_);
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaSuccess) return true;
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not a failure: keep it out of later launch checks
    return false;
  }
  ZORO_CUDA_CHECK(status);
  return false;
}

void CudaEvent::synchronize() const {
  DeviceGuard guard(ordinal_);
  ZORO_CUDA_CHECK(cudaEventSynchronize(event_));
}

float CudaEvent::elapsed_ms_since(const Event& start) const {
  const auto* begin = dynamic_cast<const CudaEvent*>(&start);
  ZORO_CHECK(begin != nullptr, "elapsed_ms_since: the start event is not a CUDA event");
  ZORO_CHECK(timing_ && begin->timing_,
             "elapsed_ms_since needs two timing events (EventOptions{.timing = true}); "
                 << (timing_ ? "the start event" : "this event") << " was created without");
  ZORO_CHECK(ordinal_ == begin->ordinal_, "elapsed_ms_since: the events belong to cuda:"
                                              << begin->ordinal_ << " and cuda:" << ordinal_);
  ZORO_CHECK(version() > 0 && begin->version() > 0,
             "elapsed_ms_since: both events must have been recorded");
  ZORO_CHECK(query() && begin->query(),
             "elapsed_ms_since: both events must be complete "
             "(synchronize the later one first)");
  float ms = 0.f;
  DeviceGuard guard(ordinal_);
  ZORO_CUDA_CHECK(cudaEventElapsedTime(&ms, begin->event_, event_));
  return ms;
}

void CudaEvent::enqueue_wait(const CudaStream& stream) const {
  // The lock orders this wait against a concurrent record(): the wait sees either the record
  // before or the one after, never a half-done one, and version() agrees with what it saw.
  // CUDA allows waiting on another device's event.
  std::lock_guard lock(mutex_);
  DeviceGuard guard(stream.ordinal());
  ZORO_CUDA_CHECK(cudaStreamWaitEvent(stream.handle(), event_, 0));
}

}  // namespace zoro::device::cuda

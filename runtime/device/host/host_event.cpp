// The host backend's versioned events (see host_device.h and Event in device.h).
//
// Versions of one event may complete out of order (record v1 on a slow stream, v2 on a fast
// one), so completion is tracked per version: `pending` holds the recorded versions whose
// marker has not run. A wait captures one version and waits for exactly that one.
#include <chrono>

#include "runtime/base/check.h"
#include "runtime/device/host/host_device.h"

namespace zoro::device::host {

namespace {
std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void EventState::complete(std::uint64_t version) {
  const std::int64_t now_ns = steady_now_ns();
  {
    std::lock_guard lock(mutex);
    pending.erase(version);
    if (version > latest_completed) {
      latest_completed = version;
      latest_completed_ns = now_ns;
    }
  }
  completed_cv.notify_all();
}

void EventState::wait_for(std::uint64_t version) {
  std::unique_lock lock(mutex);
  completed_cv.wait(lock, [&] { return complete_locked(version); });
}

HostEvent::HostEvent(HostDevice* device, EventOptions options)
    : device_(device), options_(options), state_(std::make_shared<EventState>()) {}

void HostEvent::record(Stream& stream) {
  auto* host_stream = dynamic_cast<HostStream*>(&stream);
  ZORO_CHECK(host_stream != nullptr,
             "Event::record: stream '" << stream.name() << "' belongs to another backend");
  ZORO_CHECK(host_stream->device() == device_,
             "Event::record: stream '" << stream.name() << "' belongs to another device");
  // The version is handed out and its marker enqueued under the event's lock, so no wait can
  // capture a version whose marker is not yet in a stream (which could order a wait before the
  // work it waits for).
  std::lock_guard lock(state_->mutex);
  const std::uint64_t version = state_->recorded + 1;
  host_stream->core().submit(
      Task{"record", [state = state_, version] { state->complete(version); }, false});
  state_->recorded = version;
  state_->pending.insert(version);
}

bool HostEvent::query() const {
  std::lock_guard lock(state_->mutex);
  return state_->complete_locked(state_->recorded);
}

void HostEvent::synchronize() const {
  check_not_on_worker("Event::synchronize");
  std::uint64_t version = 0;
  {
    std::lock_guard lock(state_->mutex);
    version = state_->recorded;
  }
  state_->wait_for(version);
}

float HostEvent::elapsed_ms_since(const Event& start) const {
  const auto* begin = dynamic_cast<const HostEvent*>(&start);
  ZORO_CHECK(begin != nullptr, "elapsed_ms_since: the start event belongs to another backend");
  ZORO_CHECK(begin->device_ == device_,
             "elapsed_ms_since: the start event belongs to another "
             "device");
  ZORO_CHECK(options_.timing && begin->options_.timing,
             "elapsed_ms_since: both events must be created with EventOptions::timing (start: "
                 << begin->options_.timing << ", end: " << options_.timing << ")");
  // Each event's (recorded version, its completion time), read under its own lock.
  auto read = [](EventState& state, const char* which) {
    std::lock_guard lock(state.mutex);
    ZORO_CHECK(state.recorded > 0, "elapsed_ms_since: the " << which
                                                            << " event was never "
                                                               "recorded");
    ZORO_CHECK(state.complete_locked(state.recorded),
               "elapsed_ms_since: the " << which
                                        << " event has not completed (synchronize it "
                                           "first)");
    // The latest version is complete, so it is the highest completed one: its time is ours.
    return state.latest_completed_ns;
  };
  const std::int64_t begin_ns = read(*begin->state_, "start");
  const std::int64_t end_ns = read(*state_, "end");
  return static_cast<float>(static_cast<double>(end_ns - begin_ns) / 1e6);
}

std::uint64_t HostEvent::version() const {
  std::lock_guard lock(state_->mutex);
  return state_->recorded;
}

}  // namespace zoro::device::host

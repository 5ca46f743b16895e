// Helpers for the device-layer tests: gates that host functions block on, a bounded wait for
// an event, and message checks. Every wait here is bounded (kBound): a broken backend fails
// the test instead of hanging it. The bounds are never measured: no test times anything.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/device/device.h"

namespace zoro::testing {

// Long enough never to trip on a loaded machine (sanitizers, two cores), short enough that a
// deadlock shows as a failure.
inline constexpr std::chrono::seconds kBound{30};

// A one-shot gate: wait() blocks until open(). Declare it before the streams whose tasks wait
// on it, so it outlives them.
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool is_open() const {
    std::lock_guard lock(mutex_);
    return open_;
  }
  // For host functions: waits at most kBound, and fails the test (rather than hang the stream
  // and with it the test's teardown) when the gate stays shut.
  void wait() const {
    if (!wait_for(kBound)) ADD_FAILURE() << "a gate stayed closed for " << kBound.count() << " s";
  }
  bool wait_for(std::chrono::seconds bound) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return open_; });
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool open_ = false;
};

// Calls event.synchronize() on a helper thread, so the test can wait for it with a bound.
// The destructor joins: open every gate the event depends on before it runs.
class EventWaiter {
 public:
  explicit EventWaiter(const zoro::device::Event& event)
      : thread_([this, &event] {
          event.synchronize();
          done_.open();
        }) {}
  ~EventWaiter() { thread_.join(); }
  EventWaiter(const EventWaiter&) = delete;
  EventWaiter& operator=(const EventWaiter&) = delete;
  bool completes_within(std::chrono::seconds bound) const { return done_.wait_for(bound); }

 private:
  Gate done_;
  std::thread thread_;
};

// Runs f, which must throw E; returns E's what() (and fails the test, returning "", if f
// throws nothing or something else).
template <class E, class F>
std::string thrown_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another type than expected: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

}  // namespace zoro::testing

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "  text: " << (text) << "\n  lacks: " << (part)

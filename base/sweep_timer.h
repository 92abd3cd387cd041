// SweepTimer: the periodic sweeps that run only while there is something to sweep (retained
// sockets, held calls, an inbox, pairs in flight). Arm() starts one wait of `period` unless one is
// pending, so any number of Arm() calls meanwhile lead to one sweep; the sweep returns whether
// there is still something to sweep, and the timer then waits again.
//
// Header-only on Boost.Asio; runs on the io_context's thread, like everything that arms it.
#ifndef SLIPSTREAM_BASE_SWEEP_TIMER_H_
#define SLIPSTREAM_BASE_SWEEP_TIMER_H_

#include <chrono>
#include <functional>
#include <memory>
#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace slipstream {

class SweepTimer {
 public:
  SweepTimer(boost::asio::io_context& io, std::chrono::steady_clock::duration period,
             std::function<bool()> sweep)
      : timer_(io), period_(period), sweep_(std::move(sweep)) {}
  SweepTimer(const SweepTimer&) = delete;
  SweepTimer& operator=(const SweepTimer&) = delete;

  void Arm() {
    if (*pending_) return;
    *pending_ = true;
    timer_.expires_after(period_);
    // The flag is shared with the handler: destroying the timer runs the handler later with
    // operation_aborted, when `this` is gone.
    timer_.async_wait([this, pending = pending_](const boost::system::error_code& ec) {
      *pending = false;
      if (ec) return;
      if (sweep_()) Arm();
    });
  }
  bool armed() const { return *pending_; }

 private:
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::duration period_;
  std::function<bool()> sweep_;
  std::shared_ptr<bool> pending_ = std::make_shared<bool>(false);
};

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_SWEEP_TIMER_H_

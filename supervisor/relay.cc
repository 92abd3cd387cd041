#include "supervisor/relay.h"

#include <sys/socket.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <functional>

#include <spdlog/spdlog.h>

namespace slipstream::supervisor {
namespace asio = boost::asio;

namespace {

constexpr size_t kBufferSize = 64 * 1024;

// The two directions of a relay session: `done` runs once, when both have ended.
class Directions {
 public:
  explicit Directions(std::function<void()> done) : done_(std::move(done)) {}
  void Finish(int dir) {
    finished_[dir] = true;
    Complete();
  }
  void FinishBoth() {
    finished_[0] = finished_[1] = true;
    Complete();
  }
  bool completed() const { return completed_; }

 private:
  void Complete() {
    if (!finished_[0] || !finished_[1] || completed_) return;
    completed_ = true;
    if (done_) done_();
  }
  bool finished_[2] = {false, false};
  bool completed_ = false;
  std::function<void()> done_;
};

class RelaySession : public std::enable_shared_from_this<RelaySession> {
 public:
  RelaySession(asio::io_context& io, UniqueFd unix_end, UniqueFd tcp, std::function<void()> done)
      : unix_(io, unix_end.Release()), tcp_(io, tcp.Release()), directions_(std::move(done)) {}

  void Start() {
    Pump(unix_, tcp_, up_, 0);
    Pump(tcp_, unix_, down_, 1);
  }

 private:
  using Desc = asio::posix::stream_descriptor;
  using Buffer = std::array<char, kBufferSize>;

  // Reads from `from` and writes everything to `to`, until EOF or an error.
  void Pump(Desc& from, Desc& to, Buffer& buf, int dir) {
    auto self = shared_from_this();
    from.async_read_some(asio::buffer(buf), [this, self, &from, &to, &buf, dir](
                                                const boost::system::error_code& ec, size_t n) {
      if (ec) return End(from, to, dir, ec);
      asio::async_write(
          to, asio::buffer(buf.data(), n),
          [this, self, &from, &to, &buf, dir](const boost::system::error_code& wec, size_t) {
            if (wec) return Abort(dir, wec);
            Pump(from, to, buf, dir);
          });
    });
  }

  // `from` reached EOF (orderly): pass the half-close on. Anything else (a reset) ends both ways.
  void End(Desc& from, Desc& to, int dir, const boost::system::error_code& ec) {
    if (ec == asio::error::eof) {
      ::shutdown(to.native_handle(), SHUT_WR);
      Finish(dir);
      return;
    }
    (void)from;
    Abort(dir, ec);
  }

  void Abort(int dir, const boost::system::error_code& ec) {
    spdlog::debug("relay direction {} ended: {}", dir, ec.message());
    boost::system::error_code ignored;
    // Closing both ends makes the program see the connection end (EOF, or ECONNRESET when it had
    // unread data), as it would have seen the TCP reset.
    unix_.close(ignored);
    tcp_.close(ignored);
    directions_.FinishBoth();
  }

  void Finish(int dir) { directions_.Finish(dir); }

  Desc unix_;
  Desc tcp_;
  Buffer up_{};
  Buffer down_{};
  Directions directions_;
};

// See StartReadShutRelay. Direction 0: the program's bytes (inner -> outer); direction 1: the
// peer's bytes (outer -> dropped, after `unread`).
class ReadShutSession : public std::enable_shared_from_this<ReadShutSession> {
 public:
  ReadShutSession(asio::io_context& io, UniqueFd inner, UniqueFd outer, std::string unread,
                  std::function<void(int)> arm_reset, std::function<void()> done)
      : inner_(io, inner.Release()),
        outer_(io, outer.Release()),
        unread_(std::move(unread)),
        arm_reset_(std::move(arm_reset)),
        directions_(std::move(done)) {}

  void Start() {
    // Synchronously, so that a read right after the program's shutdown() returns sees the
    // unread bytes and then EOF, never blocks.
    size_t off = 0;
    bool broken = false;
    while (off < unread_.size()) {
      ssize_t n = ::send(inner_.native_handle(), unread_.data() + off, unread_.size() - off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        broken = errno != EAGAIN;
        break;
      }
      off += static_cast<size_t>(n);
    }
    unread_.erase(0, off);
    Forward();
    if (unread_.empty() || broken) return EndDelivery();
    // More than the pair's buffer holds: the rest follows as the program reads.
    auto self = shared_from_this();
    asio::async_write(inner_, asio::buffer(unread_),
                      [this, self](const boost::system::error_code&, size_t) { EndDelivery(); });
  }

 private:
  using Desc = asio::posix::stream_descriptor;

  void EndDelivery() {
    unread_.clear();
    // The program's end now has RCV_SHUTDOWN: reads drain what is queued, then return 0.
    ::shutdown(inner_.native_handle(), SHUT_WR);
    Drop();
  }

  void Forward() {
    auto self = shared_from_this();
    inner_.async_read_some(
        asio::buffer(up_), [this, self](const boost::system::error_code& ec, size_t n) {
          if (ec == asio::error::eof) {
            ::shutdown(outer_.native_handle(), SHUT_WR);
            program_done_ = true;
            return Finish(0);
          }
          // The program closed its end with bytes unread: a reset for the peer too.
          if (ec == asio::error::connection_reset) ArmReset(outer_);
          if (ec) return Abort(ec);
          asio::async_write(outer_, asio::buffer(up_.data(), n),
                            [this, self](const boost::system::error_code& wec, size_t) {
                              if (wec) return Abort(wec);
                              Forward();
                            });
        });
  }

  void Drop() {
    auto self = shared_from_this();
    outer_.async_read_some(asio::buffer(down_),
                           [this, self](const boost::system::error_code& ec, size_t) {
                             if (ec == asio::error::eof) return Finish(1);
                             if (ec == asio::error::connection_reset) ArmReset(inner_);
                             if (ec) return Abort(ec);
                             // Data for a connection shut both ways: TCP answers with a reset.
                             // (The program then reads 0, not ECONNRESET: its end is shut for
                             // writing, so no byte can be put into `inner` to make the close a
                             // reset; docs/differences.md.)
                             if (program_done_) return Abort(asio::error::connection_reset);
                             Drop();
                           });
  }

  void ArmReset(Desc& end) {
    if (!directions_.completed() && arm_reset_ && end.is_open()) arm_reset_(end.native_handle());
  }

  void Abort(const boost::system::error_code& ec) {
    if (directions_.completed()) return;
    spdlog::debug("read-shut relay ended: {}", ec.message());
    boost::system::error_code ignored;
    inner_.close(ignored);
    outer_.close(ignored);
    directions_.FinishBoth();
  }

  void Finish(int dir) { directions_.Finish(dir); }

  Desc inner_;
  Desc outer_;
  std::string unread_;
  std::function<void(int)> arm_reset_;
  std::array<char, kBufferSize> up_{};
  std::array<char, kBufferSize> down_{};
  bool program_done_ = false;
  Directions directions_;
};

}  // namespace

void StartReadShutRelay(asio::io_context& io, UniqueFd inner, UniqueFd outer, std::string unread,
                        std::function<void(int)> arm_reset, std::function<void()> on_done) {
  std::make_shared<ReadShutSession>(io, std::move(inner), std::move(outer), std::move(unread),
                                    std::move(arm_reset), std::move(on_done))
      ->Start();
}

void StartRelay(asio::io_context& io, UniqueFd unix_end, UniqueFd tcp,
                std::function<void()> on_done) {
  std::make_shared<RelaySession>(io, std::move(unix_end), std::move(tcp), std::move(on_done))
      ->Start();
}

}  // namespace slipstream::supervisor

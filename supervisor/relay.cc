#include "supervisor/relay.h"

#include <sys/socket.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/write.hpp>

#include <spdlog/spdlog.h>

namespace slipstream::supervisor {
namespace asio = boost::asio;

namespace {

constexpr size_t kBufferSize = 64 * 1024;

class RelaySession : public std::enable_shared_from_this<RelaySession> {
 public:
  RelaySession(asio::io_context& io, UniqueFd unix_end, UniqueFd tcp, std::function<void()> done)
      : unix_(io, unix_end.Release()), tcp_(io, tcp.Release()), done_(std::move(done)) {}

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
    finished_[0] = finished_[1] = true;
    Complete();
  }

  void Finish(int dir) {
    finished_[dir] = true;
    Complete();
  }

  void Complete() {
    if (!finished_[0] || !finished_[1] || completed_) return;
    completed_ = true;
    if (done_) done_();
  }

  Desc unix_;
  Desc tcp_;
  Buffer up_{};
  Buffer down_{};
  bool finished_[2] = {false, false};
  bool completed_ = false;
  std::function<void()> done_;
};

}  // namespace

void StartRelay(asio::io_context& io, UniqueFd unix_end, UniqueFd tcp,
                std::function<void()> on_done) {
  std::make_shared<RelaySession>(io, std::move(unix_end), std::move(tcp), std::move(on_done))
      ->Start();
}

}  // namespace slipstream::supervisor

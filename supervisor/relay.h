// Relay: copies bytes both ways between a switched client's unclaimed peer end (AF_UNIX) and the
// real TCP connection, so a connection whose other side never took part still works, byte-exact.
//
// Half-close propagates (EOF on one side -> shutdown(SHUT_WR) on the other); a reset or error on
// one side closes the other. The relay ends when both directions have ended.
#ifndef SLIPSTREAM_SUPERVISOR_RELAY_H_
#define SLIPSTREAM_SUPERVISOR_RELAY_H_

#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "base/unique_fd.h"

namespace slipstream::supervisor {

// Starts relaying; the relay owns both fds and lives until both directions end, then calls
// `on_done`. The fds are switched to O_NONBLOCK: both are private to the supervisor by now.
void StartRelay(boost::asio::io_context& io, UniqueFd unix_end, UniqueFd tcp,
                std::function<void()> on_done);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_RELAY_H_

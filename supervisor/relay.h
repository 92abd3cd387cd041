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
#include <string>

#include "base/unique_fd.h"

namespace slipstream::supervisor {

// Starts relaying; the relay owns both fds and lives until both directions end, then calls
// `on_done`. The fds are switched to O_NONBLOCK: both are private to the supervisor by now.
void StartRelay(boost::asio::io_context& io, UniqueFd unix_end, UniqueFd tcp,
                std::function<void()> on_done);

// TCP's read side after shutdown(SHUT_RD), which AF_UNIX cannot give (docs/differences.md): the
// program's end is `inner`'s peer, the connection to the other program is `outer` (the program's
// former end). `unread` (what had arrived before the shutdown) is delivered first, then `inner` is
// shut for writing, so the program's reads return the bytes and then 0 without blocking. Bytes
// the program writes go on to `outer`, its half-close too. Bytes that arrive from `outer` later
// are read and dropped, so the peer's writes succeed as over TCP, until the program has shut its
// write side as well: then, as TCP answers such data with a reset, both ends are closed (the
// peer's next write fails with EPIPE). Called before the program's shutdown() returns: what fits
// at once is written, and `inner` shut, before StartReadShutRelay returns. A reset (that one, or
// one side closing with unread bytes) is passed on as a reset: `arm_reset(fd)` is called for the
// end about to be closed, so that its peer reads ECONNRESET (Switcher::ArmReset).
void StartReadShutRelay(boost::asio::io_context& io, UniqueFd inner, UniqueFd outer,
                        std::string unread, std::function<void(int fd)> arm_reset,
                        std::function<void()> on_done);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_RELAY_H_

// Internal to slipstreamd (matcher/daemon*.cc): the daemon's per-session and per-pair records.
#ifndef SLIPSTREAM_MATCHER_DAEMON_STATE_H_
#define SLIPSTREAM_MATCHER_DAEMON_STATE_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <deque>
#include <optional>
#include <vector>

#include "base/syscalls.h"
#include "matcher/daemon.h"

namespace slipstream::matcher {

using Clock = std::chrono::steady_clock;

struct Daemon::Session {
  struct Outgoing {
    MsgType type;
    uint64_t seq;
    int32_t pid;
    std::vector<uint8_t> body;
    std::vector<UniqueFd> fds;  // our own references, kept until sent
  };
  Session(boost::asio::io_context& io, int fd) : desc(io, fd) {}
  std::deque<Outgoing> outgoing;
  bool flushing = false;
  uint64_t id = 0;
  boost::asio::posix::stream_descriptor desc;
  pid_t pid = 0;
  uid_t uid = 0;
  uint64_t netns = 0;
  uint64_t netns_cookie = 0;  // from the sock_diag socket sent with kHello (0: none)
  bool hello = false;         // said kHello: gets namespace and remote-listener news
  bool closed = false;
  bool overflowed = false;  // its queue hit kMaxQueued: being closed
  // The supervisor process, from SO_PEERPIDFD (Linux 6.5) or pidfd_open (5.3), once it sends a
  // gate ledger; invalid if neither could name it (pid 0: another pid namespace, before 6.5).
  UniqueFd pidfd;
  bool exited = false;  // ... or it was already reaped then
  // kGateLedger: drained into the table once the supervisor has exited (daemon_ledger.cc).
  std::optional<GateLedger> ledger;
  FileId ledger_id;
  int fd() { return desc.native_handle(); }
};

struct Daemon::Pending {
  UniqueFd server_end;  // ours until handed over
  UniqueFd client_tcp;  // kept for kAdopt once the pair is live
  UniqueFd server_tcp;  // from kInstalled
  uint64_t owner = 0;   // the client's supervisor session
  pid_t owner_pid = 0;  // ... and its pid (it keeps a copy of the end until we report)
  int32_t client_pid = 0;
  uint64_t client_end_ino = 0;
  uint64_t server_end_ino = 0;
  uint64_t handed_to = 0;  // the session that got the end (push or claim), 0 while we hold it
  int32_t server_pid = 0;
  std::optional<Clock::time_point> accepted_since;  // the server side left the accept queue
  // The connection as the server sees it (the mirror of the client's addresses) and the
  // namespaces of both sides; for pairs keyed by sequence numbers, the claimed socket's inode.
  SockAddr server_local;
  SockAddr server_remote;
  uint64_t client_netns = 0;
  uint64_t server_netns = 0;
  uint64_t claimed_tcp_ino = 0;
  uint64_t unix_netns = 0;  // where the socketpair lives: the client's supervisor's namespace
  // The port's `switching` gate, raised while the pair is pending: the client's supervisor lowers
  // its own raise when it exits, and a server accepting in-process after that must still offer
  // the connection to its supervisor, or the end, with what the client wrote, is lost.
  AcceptGate::Count switching;
  // False from a kConnected with commit_follows until kCommitted: the server end is handed to
  // nobody meanwhile (claims wait; a push waits, for `push_to`).
  bool committed = true;
  uint64_t push_to = 0;
};

struct Daemon::Live {
  // Both TCP sockets, for a supervisor that adopts an end passed to its program (kAdopt).
  UniqueFd client_tcp;
  UniqueFd server_tcp;
  int32_t client_pid = 0;
  int32_t server_pid = 0;
  SockAddr client;
  SockAddr server;
  uint64_t client_end_ino = 0;
  uint64_t server_end_ino = 0;
  std::chrono::system_clock::time_point since;
  uint64_t client_netns = 0;  // SO_NETNS_COOKIE of each side's TCP socket
  uint64_t server_netns = 0;
  bool by_seq = false;  // paired by TCP sequence numbers (else by namespace and 4-tuple)
  uint64_t unix_netns = 0;
  uint64_t server_session = 0;  // told when the server's end is closed (kEndClosed)
};

// A socket's address, v4-mapped spelled as IPv4.
std::optional<SockAddr> Name(int fd, bool peer);
// The network namespace a socket lives in: SIOCGSKNS (needs CAP_NET_ADMIN), else `fallback`, the
// namespace of the supervisor that sent it (supervisors only send sockets of programs in their own
// namespace).
uint64_t SocketNetns(int fd, uint64_t fallback);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_DAEMON_STATE_H_

// slipstreamd: the TCP side of a switched connection whose peer has hung up (kPeerGone).
//
// A program that closes its switched end sends nothing over the retained TCP connection: that
// socket lives on in its supervisor (until its 1 s sweep) and here (until our 2 s sweep). Over
// TCP the survivor would have the FIN (CLOSE_WAIT) or, after an abortive close or a close with
// data unread, the RST at once: getpeername() then fails with ENOTCONN and TCP_INFO says CLOSE.
// CPython's ssl module decides on that getpeername() whether a socket it wraps is connected
// (test_ssl's TestPreHandshakeClose). The survivor's supervisor answers those calls from its own
// retained socket, so before it does, it asks us to give the peer's retained socket what its
// program's close would have sent. We hold a copy of both TCP sockets of every live pair.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "base/socket_info.h"
#include "matcher/daemon.h"
#include "matcher/daemon_state.h"

namespace slipstream::matcher {

namespace {

// What the close of the last fd of `tcp` sends: RST with SO_LINGER {1, 0} (tcp_close()), which the
// supervisor also set on this retained socket when the program set it on its end; else FIN.
// `reset` (the survivor's end showed the ECONNRESET of a close with data unread): RST as well.
// connect(AF_UNSPEC) is tcp_disconnect(): an RST to the peer from a socket with other references
// (the peer's supervisor may still hold one); shutdown(SHUT_WR) the FIN.
void SendWhatCloseWould(int tcp, bool reset) {
  linger value{};
  socklen_t len = sizeof(value);
  bool abortive = getsockopt(tcp, SOL_SOCKET, SO_LINGER, &value, &len) == 0 && value.l_onoff != 0 &&
                  value.l_linger == 0;
  if (reset || abortive) {
    sockaddr unspec{};
    unspec.sa_family = AF_UNSPEC;
    if (connect(tcp, &unspec, sizeof(unspec)) < 0) {
      spdlog::debug("peer gone: connect(AF_UNSPEC): {}", strerror(errno));
    }
    return;
  }
  (void)shutdown(tcp, SHUT_WR);  // ENOTCONN when already closed: nothing to send
}

}  // namespace

void Daemon::OnPeerGone(Session* s, Message& m) {
  const auto* body = m.As<PeerGoneBody>();
  // Proof of possession, as for kAdopt: only the holder of an end may settle its connection.
  if (body == nullptr || m.fds.size() != 1 || !IsUnixStreamSocket(m.fds[0].Get())) {
    return ReplyError(s, m, EINVAL, "peer-gone needs the AF_UNIX end");
  }
  uint64_t ino = InodeOf(m.fds[0].Get());
  PeerGoneReplyBody reply{static_cast<uint8_t>(PeerGoneResult::kUnknown)};
  for (auto& [key, live] : live_) {
    bool client = live.client_end_ino == ino;
    if (!client && live.server_end_ino != ino) continue;
    UniqueFd& peer_tcp = client ? live.server_tcp : live.client_tcp;
    uint64_t peer_end = client ? live.server_end_ino : live.client_end_ino;
    // Hung up may mean shut both ways while still open (its program may still read): only a
    // closed end, gone from sock_diag, is settled.
    SockDiag* diag = UnixDiagOf(live.unix_netns);
    if (diag == nullptr) break;  // cannot tell
    auto found = diag->UnixPeer(peer_end);
    if (found) reply.result = static_cast<uint8_t>(PeerGoneResult::kPeerAlive);
    if (found || found.error().err != ENOENT) break;
    // Released by our sweep already: the peer's supervisor sends the FIN or RST when it lets go.
    if (peer_tcp) SendWhatCloseWould(peer_tcp.Get(), body->reset != 0);
    reply.result = static_cast<uint8_t>(PeerGoneResult::kSettled);
    break;
  }
  (void)Send(s, MsgType::kPeerGoneReply, m.header.seq, m.header.pid, Bytes(reply));
}

}  // namespace slipstream::matcher

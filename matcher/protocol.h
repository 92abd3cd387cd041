// The matcher protocol: binary messages over an AF_UNIX SOCK_SEQPACKET socket between each
// supervisor and slipstreamd, with socket fds attached as SCM_RIGHTS (proof of possession: the
// daemon reads addresses and state from the kernel, never from the message).
//
// The daemon is kept off the critical path of a connection: every message a supervisor sends while
// a program waits in connect() is one-way, and the server's end is pushed to the supervisor that
// holds the listeners before the program even calls accept().
//
// Requests (supervisor -> daemon; [..] are attached fds, {..} the body) and what answers them:
//
// clang-format off
//   kHello {addresses} [sock_diag socket]         kListener..., kNetns..., kRemoteListener..., then
//                                                   kHelloReply: the supervisor knows them all
//   kRegisterListener [listener]                  kRegistered (after broadcasting kListener)
//   kIntent {by_seq} [client socket]              (none) a supervised client is connecting;
//   kIntent {.., raise_gate, port} [..]           kIntentReply once the port's gate is raised
//   kAbort {client socket ino}                    (none) ...and gave up
//   kConnected {client end ino} [tcp, server end] (none) -> kPush to the listeners' supervisor,
//                                                   or kRelay if not every listener is supervised
//   kClaim [accepted tcp socket]                  kClaimReply {0: no, 1: here [end],
//                                                   2: pushed to you}
//   kInstalled {server end ino} [tcp]             (none) -> kRelease to the client's supervisor
//   kDisown {server end ino}                      (none) -> kRelay to the client's supervisor
//   kAdopt {end ino} [the AF_UNIX end]            kAdoptReply {found, client} [its TCP socket]
//   kSweep                                        kSwept (closed ends' TCP sockets released)
//   kPeerPid {end ino}                            kPeerPidReply {pid of the other end's holder}
//   kStatus                                       kStatusReply {json}
//   kGateLedger [memfd]                           (none) lowered by the daemon when we are gone
//   kEndClosed {server end ino}                   (none) closed, in another namespace
//   kPeerGone {reset} [the AF_UNIX end]           kPeerGoneReply {result}: the peer's TCP
//                                                   socket was given its program's FIN or RST
//   anything malformed                            kError {errno, text}
//
// Unsolicited (daemon -> supervisor):
//   kListener {ino, added}                        a supervised listener came or went
//   kPush {4-tuple} [server end]                  an end for the next accept of that connection
//   kRelease {server end ino}                     claimed: drop your copy
//   kRelay {server end ino}                       never claimed: relay it
//   kNetns {cookie, addresses}                    a namespace with supervisors (or gone)
//   kRemoteListener {ino, netns, addr}            a listener other namespaces may reach
// clang-format on
#ifndef SLIPSTREAM_MATCHER_PROTOCOL_H_
#define SLIPSTREAM_MATCHER_PROTOCOL_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/sockaddr.h"
#include "base/unique_fd.h"

namespace slipstream::matcher {

inline constexpr uint32_t kMagic = 0x53504c53;  // "SLPS"
inline constexpr uint16_t kVersion = 1;
// A SEQPACKET message longer than the sending socket's SO_SNDBUF less 32 bytes fails with EMSGSIZE
// (net/unix/af_unix.c, unix_dgram_sendmsg; default net.core.wmem_default 212992 bytes): 192 KiB
// and the header fit with default buffers.
inline constexpr size_t kMaxBody = 192 * 1024;
inline constexpr int kMaxFds = 2;

enum class MsgType : uint16_t {
  // Requests, 1-99.
  kRegisterListener = 1,
  kIntent = 2,
  kConnected = 3,
  kAbort = 4,
  kClaim = 5,
  kInstalled = 6,
  kStatus = 7,
  kDisown = 8,
  kHello = 9,
  kAdopt = 10,
  // A supervisor saw switched ends closed (before a bind() to their port): release the TCP
  // sockets of closed ends now rather than at the next 2 s sweep. Answered kSwept.
  kSweep = 11,
  // Which process holds the other end of the switched end `inode` (InodeBody)? Answered
  // kPeerPidReply (PeerPidBody, pid 0: unknown), a hint for a /proc look-up.
  kPeerPid = 12,
  // The supervisor's GateLedger (a sealed memfd): the accept-gate counts it holds raised, which
  // the daemon lowers when the session ends. No answer.
  kGateLedger = 13,
  // The client's supervisor has answered the connect whose kConnected said `commit_follows`
  // (InodeBody: the client's end): the end is in its program, or the connect was answered
  // otherwise. Until then the daemon hands the server end to nobody. No answer.
  kCommitted = 14,
  // The peer of this end (sent with the request: proof of possession) has hung up; `reset`: the
  // end shows the pending ECONNRESET of a close with data unread. The daemon gives the peer's
  // retained TCP socket what its program's close would have sent (RST or FIN), so that the TCP
  // state this end's supervisor reads from its own retained socket is what TCP shows after it.
  // Answered kPeerGoneReply.
  kPeerGone = 15,
  // Replies, 100-199 (the numbers are the wire format: never renumbered).
  kRegistered = 100,
  kClaimReply = 102,
  kStatusReply = 103,
  kError = 104,
  kHelloReply = 105,
  kAdoptReply = 106,
  kSwept = 107,
  kPeerPidReply = 108,
  kIntentReply = 109,
  kPeerGoneReply = 110,
  // Unsolicited, 200-.
  kRelease = 201,
  kRelay = 202,
  kListener = 203,
  kPush = 204,
  // A network namespace in which supervisors run (NetnsBody), sent after kHello and on changes.
  kNetns = 205,
  // A supervised listener in a network namespace other than the daemon's (RemoteListenerBody).
  kRemoteListener = 206,
  // The program closed the end `inode` (InodeBody) that this supervisor installed, and that end
  // lives in another network namespace, where the supervisor's sock_diag cannot see it.
  kEndClosed = 207,
};

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t type = 0;
  uint64_t seq = 0;  // request sequence number; replies carry the request's
  int32_t pid = 0;   // the supervised process the request is for (for status listings)
  uint32_t body_len = 0;
};

enum class QueryReason : uint8_t {
  kSupervised = 0,  // every listener that can take the connection is supervised
  kNoListener = 1,
  kUnsupervisedListener = 2,
  kOtherNamespace = 3,
  kError = 4,
};
struct InodeBody {
  uint64_t inode;
};
struct ClaimReplyBody {
  uint8_t found;  // ClaimResult
};
enum class ClaimResult : uint8_t { kNo = 0, kHere = 1, kPushedToYou = 2 };
struct AdoptReplyBody {
  uint8_t found;   // AdoptResult
  uint8_t client;  // the end is the client's (connect) side
};
enum class AdoptResult : uint8_t {
  kNo = 0,     // not the end of a pair this daemon knows
  kFound = 1,  // its TCP socket comes with the reply
  // A server end whose supervisor has not yet reported it installed (kInstalled brings the server's
  // TCP socket): its program passed it on at once. Ask again in a moment.
  kInFlight = 2,
};
struct PeerPidBody {
  int32_t pid;
};
struct PeerGoneBody {
  uint8_t reset;
};
enum class PeerGoneResult : uint8_t {
  kUnknown = 0,    // no live pair has this end (relayed, another daemon's, gone): ask no more
  kSettled = 1,    // the peer's TCP socket got its FIN or RST (or had it already)
  kPeerAlive = 2,  // the peer end still exists (both directions shut, not closed): ask again
};
struct PeerGoneReplyBody {
  uint8_t result;  // PeerGoneResult
};
struct ListenerBody {
  uint64_t inode;
  uint8_t added;
};
// Both addresses as the accepting side sees them: local = the listener's address.
struct PushBody {
  sockaddr_storage local;
  sockaddr_storage remote;
  uint32_t local_len;
  uint32_t remote_len;
  uint64_t server_end_ino;
};
// Addresses of a network namespace (its interfaces, loopback excepted), IPv4 as v4-mapped. Sent by
// each supervisor with kHello, read from its own namespace: a hint that lets a supervisor in
// another namespace decide to try a switch. Pairing never depends on it (sequence numbers do).
inline constexpr size_t kMaxNetnsAddrs = 32;
struct NetnsAddrs {
  uint32_t count;
  uint32_t reserved;
  in6_addr addrs[kMaxNetnsAddrs];
};
// kHello carries NetnsAddrs and, attached, a NETLINK_SOCK_DIAG socket of the supervisor's
// namespace: the daemon learns the namespace from the kernel (SO_NETNS_COOKIE of that socket) and
// can look at its sockets later. The reply says which namespace that is, which is the daemon's,
// and whether the daemon may read sequence numbers there (CAP_NET_ADMIN over it).
struct HelloReplyBody {
  uint64_t your_netns;
  uint64_t daemon_netns;
  uint8_t seq_evidence;
  uint8_t reserved[7];
};
struct NetnsBody {
  uint64_t cookie;
  uint8_t present;       // 0: the last supervisor of that namespace left
  uint8_t seq_evidence;  // the daemon can read sequence numbers there
  uint8_t reserved[6];
  NetnsAddrs addrs;
};
struct RemoteListenerBody {
  uint64_t inode;
  uint64_t netns;  // cookie
  sockaddr_storage addr;
  uint32_t addr_len;
  uint8_t added;
  uint8_t v6only;
  uint8_t reserved[2];
};
// kIntent and kConnected: pair this connection by TCP sequence numbers (its server side is, or may
// be, in another network namespace than the client's, or the client is not in the daemon's), not
// by (namespace, 4-tuple). kIntent's body may be empty (by 4-tuple).
// `raise_gate`: the supervisor cannot write the listener table (a system-wide daemon's, root's
// 0644): the daemon raises the `switching` accept gate of destination port `port` for it, until
// kConnected or kAbort or the intent expires, and answers kIntentReply once it has.
struct IntentBody {
  uint8_t by_seq;
  uint8_t raise_gate;
  uint16_t port;  // host order
  uint8_t reserved[4];
};
struct ConnectedBody {
  uint64_t inode;  // the client's AF_UNIX end
  uint8_t by_seq;
  // The end reaches the program only after this message (an answer by ADDFD SEND to the preload
  // library): kCommitted follows. A supervisor killed in between leaves a program that may hold
  // its TCP socket instead, and the server must then keep TCP too.
  uint8_t commit_follows;
  uint8_t reserved[6];
};
struct ErrorBody {
  int32_t err;
  char text[124];
};

struct Message {
  Header header;
  std::vector<uint8_t> body;
  std::vector<UniqueFd> fds;

  MsgType type() const { return static_cast<MsgType>(header.type); }
  // The body as T when it has exactly T's size.
  template <class T>
  const T* As() const {
    return body.size() == sizeof(T) ? reinterpret_cast<const T*>(body.data()) : nullptr;
  }
};

template <class T>
std::span<const uint8_t> Bytes(const T& value) {
  return {reinterpret_cast<const uint8_t*>(&value), sizeof(T)};
}

// One message per call (SOCK_SEQPACKET keeps boundaries). Never raises SIGPIPE. On a full socket
// buffer it waits for room (bounded: ETIMEDOUT after 5 s) unless `wait` is false (then EAGAIN).
[[nodiscard]] Status SendMessage(int sock, MsgType type, uint64_t seq, int32_t pid,
                                 std::span<const uint8_t> body, std::span<const int> fds = {},
                                 bool wait = true);
// Receives and validates one message. Fds that arrive are always owned by the result or closed,
// even when the message is rejected (EPROTO: bad magic/version/length, truncated, too many fds).
// ECONNRESET/EOF: the peer closed (reported as SysError{0, "eof"} for an orderly close).
[[nodiscard]] Result<Message> ReceiveMessage(int sock, bool nonblocking = false);

const char* MsgTypeName(MsgType type);

// Body readers: the fields a peer controls, checked. Every consumer goes through these.
// The addresses of a kHello or kNetns body: at most kMaxNetnsAddrs, whatever `count` says.
std::vector<SockAddr> NetnsAddrList(const NetnsAddrs& body);
// kPush's two addresses; false when a length exceeds sockaddr_storage.
bool PushAddrs(const PushBody& body, SockAddr* local, SockAddr* remote);
// kRemoteListener's address; nullopt when its length exceeds sockaddr_storage.
std::optional<SockAddr> RemoteListenerAddr(const RemoteListenerBody& body);
// kError's text, which the sender may have left without a terminating NUL.
std::string ErrorText(const ErrorBody& body);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_PROTOCOL_H_

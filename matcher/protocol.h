// The matcher protocol: binary messages over an AF_UNIX SOCK_SEQPACKET socket between each
// supervisor and slipstreamd, with socket fds attached as SCM_RIGHTS (proof of possession: the
// daemon reads addresses and state from the kernel, never from the message).
//
// The daemon is kept off the critical path of a connection: every message a supervisor sends while
// a program waits in connect() is one-way, and the server's end is pushed to the supervisor that
// holds the listeners before the program even calls accept().
//
//   supervisor -> daemon                         daemon -> supervisor
//   kHello                                        the supervised listeners (kListener...), then
//                                                 kHelloReply: the supervisor knows them all
//   kRegisterListener [listener]                  kRegistered (after broadcasting kListener)
//   kIntent [client socket]                       (no reply) a supervised client is connecting
//   kAbort {client socket ino}                    (no reply) ...and gave up
//   kConnected {client end ino} [tcp, server end] (no reply) -> kPush to the listeners' supervisor
//                                                   or, if not every listener is supervised, kRelay
//   kClaim [accepted tcp socket]                  kClaimReply {0: no, 1: here [end], 2: pushed to
//   you} kInstalled {server end ino}                   (no reply) -> kRelease to the client's
//   supervisor kDisown {server end ino}                      (no reply) -> kRelay to the client's
//   supervisor kStatus                                       kStatusReply {json}
//                                                 kListener {ino, added}: the supervised listeners
//                                                 kPush {key} [server end]
//                                                 kRelease {server end ino}: claimed, drop your
//                                                 copy kRelay {server end ino}: never claimed,
//                                                 relay it
//   anything malformed                            kError {errno, text}
#ifndef SLIPSTREAM_MATCHER_PROTOCOL_H_
#define SLIPSTREAM_MATCHER_PROTOCOL_H_

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream::matcher {

inline constexpr uint32_t kMagic = 0x53504c53;  // "SLPS"
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kMaxBody = 256 * 1024;
inline constexpr int kMaxFds = 2;

enum class MsgType : uint16_t {
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
  kRegistered = 100,
  kHelloReply = 105,
  kAdoptReply = 106,
  kSwept = 107,
  kPeerPidReply = 108,
  kClaimReply = 102,
  kStatusReply = 103,
  kError = 104,
  kRelease = 201,
  kRelay = 202,
  kListener = 203,
  kPush = 204,
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
  uint8_t found;
  uint8_t client;  // the end is the client's (connect) side
};
struct PeerPidBody {
  int32_t pid;
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

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_PROTOCOL_H_

// The matcher protocol: binary messages over an AF_UNIX SOCK_SEQPACKET socket between each
// supervisor and slipstreamd, with socket fds attached as SCM_RIGHTS (proof of possession: the
// daemon reads addresses and state from the kernel, never from the message).
//
//   supervisor -> daemon                         daemon -> supervisor
//   kRegisterListener [listener]                  (no reply)
//   kQuery {dest} [client socket]                 kQueryReply {switch?}
//   kConnected {client end ino} [tcp, server end] (no reply)
//   kAbort {client socket ino}                    (no reply)
//   kClaim [accepted tcp socket]                  kClaimReply {found} [server end]
//   kStatus                                       kStatusReply {json}
//                                                 kRelease {server end ino}: claimed, drop your copy
//                                                 kRelay {server end ino}: never claimed, relay it
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
  kQuery = 2,
  kConnected = 3,
  kAbort = 4,
  kClaim = 5,
  kStatus = 7,
  kQueryReply = 101,
  kClaimReply = 102,
  kStatusReply = 103,
  kError = 104,
  kRelease = 201,
  kRelay = 202,
};

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t type = 0;
  uint64_t seq = 0;     // request sequence number; replies carry the request's
  int32_t pid = 0;      // the supervised process the request is for (for status listings)
  uint32_t body_len = 0;
};

struct QueryBody {
  sockaddr_storage dest;
  uint32_t dest_len;
};
struct QueryReplyBody {
  uint8_t do_switch;
  uint8_t reason;  // QueryReason
};
enum class QueryReason : uint8_t {
  kSupervised = 0,       // every listener that can take the connection is supervised
  kNoListener = 1,
  kUnsupervisedListener = 2,
  kOtherNamespace = 3,
  kError = 4,
};
struct InodeBody {
  uint64_t inode;
};
struct ClaimReplyBody {
  uint8_t found;
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

// One message per call (SOCK_SEQPACKET keeps boundaries). Never raises SIGPIPE.
[[nodiscard]] Status SendMessage(int sock, MsgType type, uint64_t seq, int32_t pid,
                                 std::span<const uint8_t> body, std::span<const int> fds = {});
// Receives and validates one message. Fds that arrive are always owned by the result or closed,
// even when the message is rejected (EPROTO: bad magic/version/length, truncated, too many fds).
// ECONNRESET/EOF: the peer closed (reported as SysError{0, "eof"} for an orderly close).
[[nodiscard]] Result<Message> ReceiveMessage(int sock, bool nonblocking = false);

const char* MsgTypeName(MsgType type);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_PROTOCOL_H_

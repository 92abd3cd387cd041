#include "base/netns.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "base/unique_fd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

namespace slipstream {
namespace {

Status SetInt(int sock, int level, int name, int value) {
  if (setsockopt(sock, level, name, &value, sizeof(value)) < 0) return Errno("setsockopt");
  return {};
}

Result<uint32_t> QueueSeq(int sock, int queue) {
  if (auto st = SetInt(sock, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue); !st) {
    return tl::unexpected(st.error());
  }
  uint32_t seq = 0;
  socklen_t len = sizeof(seq);
  if (getsockopt(sock, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, &len) < 0) {
    return Errno("getsockopt(TCP_QUEUE_SEQ)");
  }
  return seq;
}

}  // namespace

Result<uint64_t> NetnsCookie(int sock) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0) {
    return Errno("getsockopt(SO_NETNS_COOKIE)");
  }
  return cookie;
}

bool CanAdminNetns(int sock) {
  UniqueFd ns(ioctl(sock, SIOCGSKNS));
  return static_cast<bool>(ns);
}

Result<TcpSeqs> ReadTcpSeqs(int sock) {
  int reuse = 0;
  socklen_t len = sizeof(reuse);
  if (getsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) < 0) {
    return Errno("getsockopt(SO_REUSEADDR)");
  }
  if (auto st = SetInt(sock, IPPROTO_TCP, TCP_REPAIR, 1); !st) return tl::unexpected(st.error());
  auto send = QueueSeq(sock, TCP_SEND_QUEUE);
  auto receive = send ? QueueSeq(sock, TCP_RECV_QUEUE) : send;
  (void)SetInt(sock, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
  auto off = SetInt(sock, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
  // Repair mode forced sk_reuse and leaving it cleared it: give the program its own value back.
  (void)SetInt(sock, SOL_SOCKET, SO_REUSEADDR, reuse);
  if (!send) return tl::unexpected(send.error());
  if (!receive) return tl::unexpected(receive.error());
  if (!off) return tl::unexpected(off.error());
  return TcpSeqs{*send, *receive};
}

}  // namespace slipstream

#include "base/sock_diag.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace slipstream {
namespace {

constexpr uint32_t kTcpListen = 10;  // TCP_LISTEN in the kernel's enum

template <class Req>
struct Request {
  nlmsghdr hdr;
  Req req;
};

SockAddr AddrFrom(uint8_t family, const __be32* addr, __be16 port) {
  if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = port;
    std::memcpy(&sin.sin_addr, addr, 4);
    return SockAddr(&sin, sizeof(sin));
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = port;
  std::memcpy(&sin6.sin6_addr, addr, 16);
  return SockAddr(&sin6, sizeof(sin6));
}

// Fills id.src/dst/ports from a socket address; returns the family to query.
uint8_t FillEndpoint(const SockAddr& addr, __be32* out, __be16* port) {
  if (auto v4 = addr.MappedV4()) {
    std::memcpy(out, &*v4, 4);
    *port = htons(addr.port());
    return AF_INET;
  }
  if (addr.family() == AF_INET) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(addr.get())->sin_addr, 4);
    *port = htons(addr.port());
    return AF_INET;
  }
  std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(addr.get())->sin6_addr, 16);
  *port = htons(addr.port());
  return AF_INET6;
}

}  // namespace

namespace diag_parse {

Result<bool> WalkReplies(std::span<const uint8_t> datagram, uint32_t seq, bool dump,
                         const std::function<void(const nlmsghdr*)>& on_msg) {
  // NLMSG_OK checks that each header, and the length it claims, fit in what is left.
  int len = static_cast<int>(std::min<size_t>(datagram.size(), INT32_MAX));
  for (auto* h = reinterpret_cast<const nlmsghdr*>(datagram.data()); NLMSG_OK(h, len);
       h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_seq != seq) continue;  // a late reply to an earlier request
    if (h->nlmsg_type == NLMSG_DONE) return true;
    if (h->nlmsg_type == NLMSG_ERROR) {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Error(EPROTO, "sock_diag");
      // The kernel writes -errno; anything else (positive, or INT_MIN, whose negation overflows)
      // is not an errno.
      int error = static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
      if (error == 0) return true;
      if (error > 0 || error < -4095) return Error(EPROTO, "sock_diag");
      return Error(-error, "sock_diag");
    }
    on_msg(h);
    if (!dump) return true;
  }
  return false;
}

std::optional<TcpSocketInfo> ParseInet(const nlmsghdr* h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) return std::nullopt;
  const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
  TcpSocketInfo info;
  info.local = AddrFrom(msg->idiag_family, msg->id.idiag_src, msg->id.idiag_sport);
  info.remote = AddrFrom(msg->idiag_family, msg->id.idiag_dst, msg->id.idiag_dport);
  info.inode = msg->idiag_inode;
  info.state = msg->idiag_state;
  info.uid = msg->idiag_uid;
  int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*msg)));
  for (const rtattr* a = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(a, len);
       a = RTA_NEXT(a, len)) {
    if (a->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(a) >= 1) {
      info.v6only = *static_cast<const uint8_t*>(RTA_DATA(a)) != 0;
    }
  }
  return info;
}

std::optional<uint64_t> ParseUnixInode(const nlmsghdr* h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(unix_diag_msg))) return std::nullopt;
  return static_cast<const unix_diag_msg*>(NLMSG_DATA(h))->udiag_ino;
}

std::optional<uint64_t> ParseUnixPeer(const nlmsghdr* h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(unix_diag_msg))) return std::nullopt;
  const auto* msg = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
  uint64_t peer = 0;
  int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*msg)));
  for (const rtattr* a = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(a, len);
       a = RTA_NEXT(a, len)) {
    if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
      uint32_t value;
      std::memcpy(&value, RTA_DATA(a), sizeof(value));
      peer = value;
    }
  }
  return peer;
}

}  // namespace diag_parse

Result<SockDiag> SockDiag::Open() {
  UniqueFd fd(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) return Errno("socket(NETLINK_SOCK_DIAG)");
  return SockDiag(std::move(fd));
}

Status SockDiag::Send(const void* req, size_t len) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  while (sendto(fd_.Get(), req, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    if (errno != EINTR) return Errno("sendto(sock_diag)");
  }
  return {};
}

template <class F>
Status SockDiag::Receive(bool dump, F on_msg) {
  alignas(nlmsghdr) uint8_t buf[32768];
  for (;;) {
    ssize_t n = recv(fd_.Get(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("recv(sock_diag)");
    auto done = diag_parse::WalkReplies({buf, static_cast<size_t>(n)}, seq_, dump, on_msg);
    if (!done) return tl::unexpected(done.error());
    if (*done) return {};
  }
}

Result<std::vector<TcpSocketInfo>> SockDiag::TcpListeners(uint16_t port) {
  std::vector<TcpSocketInfo> out;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    Request<inet_diag_req_v2> r{};
    r.hdr.nlmsg_len = sizeof(r);
    r.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    r.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    r.hdr.nlmsg_seq = ++seq_;
    r.req.sdiag_family = family;
    r.req.sdiag_protocol = IPPROTO_TCP;
    r.req.idiag_states = 1u << kTcpListen;
    // INET_DIAG_SKV6ONLY comes with every AF_INET6 socket; it cannot be asked for in idiag_ext
    // (8 bits), and needs not be.
    if (auto st = Send(&r, sizeof(r)); !st) return tl::unexpected(st.error());
    auto st = Receive(true, [&](const nlmsghdr* h) {
      auto info = diag_parse::ParseInet(h);
      if (info && info->local.port() == port) out.push_back(std::move(*info));
    });
    if (!st) return tl::unexpected(st.error());
  }
  return out;
}

Result<TcpSocketInfo> SockDiag::LookupTcp(const SockAddr& local, const SockAddr& remote) {
  Request<inet_diag_req_v2> r{};
  r.hdr.nlmsg_len = sizeof(r);
  r.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.hdr.nlmsg_flags = NLM_F_REQUEST;
  r.hdr.nlmsg_seq = ++seq_;
  r.req.sdiag_protocol = IPPROTO_TCP;
  r.req.idiag_states = ~0u;
  r.req.sdiag_family = FillEndpoint(local, r.req.id.idiag_src, &r.req.id.idiag_sport);
  if (FillEndpoint(remote, r.req.id.idiag_dst, &r.req.id.idiag_dport) != r.req.sdiag_family) {
    return Error(EAFNOSUPPORT, "sock_diag lookup");
  }
  r.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  r.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  if (auto st = Send(&r, sizeof(r)); !st) return tl::unexpected(st.error());
  TcpSocketInfo info;
  bool found = false;
  auto st = Receive(false, [&](const nlmsghdr* h) {
    auto parsed = diag_parse::ParseInet(h);
    if (!parsed) return;
    info = std::move(*parsed);
    found = true;
  });
  if (!st) return tl::unexpected(st.error());
  if (!found) return Error(ENOENT, "sock_diag lookup");
  return info;
}

Result<std::unordered_set<uint64_t>> SockDiag::UnixInodes() {
  Request<unix_diag_req> r{};
  r.hdr.nlmsg_len = sizeof(r);
  r.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  r.hdr.nlmsg_seq = ++seq_;
  r.req.sdiag_family = AF_UNIX;
  r.req.udiag_states = ~0u;
  if (auto st = Send(&r, sizeof(r)); !st) return tl::unexpected(st.error());
  std::unordered_set<uint64_t> inodes;
  auto st = Receive(true, [&](const nlmsghdr* h) {
    if (auto ino = diag_parse::ParseUnixInode(h)) inodes.insert(*ino);
  });
  if (!st) return tl::unexpected(st.error());
  return inodes;
}

Result<uint64_t> SockDiag::UnixPeer(uint64_t inode) {
  Request<unix_diag_req> r{};
  r.hdr.nlmsg_len = sizeof(r);
  r.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.hdr.nlmsg_flags = NLM_F_REQUEST;
  r.hdr.nlmsg_seq = ++seq_;
  r.req.sdiag_family = AF_UNIX;
  r.req.udiag_states = ~0u;
  r.req.udiag_ino = static_cast<__u32>(inode);
  r.req.udiag_show = UDIAG_SHOW_PEER;
  r.req.udiag_cookie[0] = INET_DIAG_NOCOOKIE;
  r.req.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
  if (auto st = Send(&r, sizeof(r)); !st) return tl::unexpected(st.error());
  uint64_t peer = 0;
  auto st =
      Receive(false, [&](const nlmsghdr* h) { peer = diag_parse::ParseUnixPeer(h).value_or(0); });
  if (!st) return tl::unexpected(st.error());
  if (peer == 0) return Error(ENOENT, "sock_diag unix peer");
  return peer;
}

}  // namespace slipstream

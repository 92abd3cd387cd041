#include "base/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace slipstream {

Status SendWithFds(int sock, std::span<const iovec> data, std::span<const int> fds, int flags) {
  if (fds.size() > kMaxPassedFds) return Error(EINVAL, "sendmsg: too many fds");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(data.data());
  msg.msg_iovlen = data.size();
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  while (sendmsg(sock, &msg, flags | MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return Errno("sendmsg");
  }
  return {};
}

Result<Received> ReceiveWithFds(int sock, std::span<const iovec> data, int flags) {
  // Room for one fd more than anyone sends, so that a sender of too many is seen (MSG_CTRUNC).
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kMaxPassedFds + 1))] = {};
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(data.data());
  msg.msg_iovlen = data.size();
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  while ((n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return Errno("recvmsg");
  }
  Received r;
  r.bytes = static_cast<size_t>(n);
  r.msg_flags = msg.msg_flags;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      r.fds.emplace_back(fd);
    }
  }
  return r;
}

}  // namespace slipstream

#include "supervisor/socket_calls_util.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#include "preload-fallback/preload_abi.h"

namespace slipstream::supervisor {

std::string FdText(uint64_t fd) { return std::to_string(static_cast<int>(fd)); }

std::string AddrText(const tracer::TargetAccess* target, uint64_t ptr, uint64_t len) {
  if (target == nullptr) return "?";
  return AddrText(tracer::CopySockAddrIn(*target, ptr, static_cast<int64_t>(len)), len);
}

std::string AddrText(const Result<SockAddr>& copied, uint64_t len) {
  if (!copied) {
    return copied.error().err == EFAULT ? "<bad address>"
                                        : "<addrlen " + std::to_string(static_cast<int>(len)) + ">";
  }
  return copied->ToString();
}

Result<slipstream_names> LibraryNames(const SockAddr& local, const SockAddr& peer) {
  slipstream_names names{};
  if (local.len() > sizeof(names.local) || peer.len() > sizeof(names.peer)) {
    return Error(EINVAL, "slipstream_names");
  }
  names.local_len = local.len();
  names.peer_len = peer.len();
  memcpy(names.local, local.get(), local.len());
  memcpy(names.peer, peer.get(), peer.len());
  return names;
}

bool Established(int sock) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  return getsockopt(sock, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
         info.tcpi_state == TCP_ESTABLISHED;
}

bool IsIdentityOption(int name) { return slipstream_identity_option(name) != 0; }

bool FdTableFull(pid_t tid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", tid);
  struct stat st;
  if (stat(path, &st) != 0 || st.st_size <= 0) return false;
  rlimit limit{};
  if (prlimit(tid, RLIMIT_NOFILE, nullptr, &limit) != 0) return false;
  return static_cast<rlim_t>(st.st_size) >= limit.rlim_cur;
}

}  // namespace slipstream::supervisor

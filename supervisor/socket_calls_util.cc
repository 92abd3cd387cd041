#include "supervisor/socket_calls_util.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
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

namespace slipstream::supervisor {

const uint8_t* BeforeAGuardPage(std::span<const uint8_t> bytes) {
  static uint8_t* const guard = [] {
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return static_cast<uint8_t*>(nullptr);
    auto* pages = static_cast<uint8_t*>(p);
    if (mprotect(pages + page, page, PROT_NONE) != 0) return static_cast<uint8_t*>(nullptr);
    return pages + page;
  }();
  if (guard == nullptr) return nullptr;  // no memory: the kernel's EFAULT at the first byte
  std::memcpy(guard - bytes.size(), bytes.data(), bytes.size());
  return guard - bytes.size();
}

}  // namespace slipstream::supervisor

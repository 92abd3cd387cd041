#include "tracer/pidfd_cache.h"

#include "base/syscalls.h"
#include "tracer/target.h"

namespace slipstream::tracer {

Result<int> PidfdCache::Get(pid_t tid) {
  pid_t tgid = 0;
  if (!pidfd_thread_) {
    auto group = ThreadGroupOf(tid);
    if (!group) return tl::unexpected(group.error());
    tgid = *group;
  }
  if (auto it = map_.find(tid); it != map_.end()) {
    if (it->second.tgid == tgid) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.pidfd.Get();
    }
    Invalidate(tid);  // the tid now belongs to another process
  }
  auto fd = pidfd_thread_ ? TargetAccess::OpenPidfd(tid, true) : PidfdOpen(tgid);
  if (!fd) return tl::unexpected(fd.error());
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(tid);
  int raw = fd->Get();
  map_.emplace(tid, Entry{std::move(*fd), tgid, lru_.begin()});
  return raw;
}

void PidfdCache::Invalidate(pid_t tid) {
  auto it = map_.find(tid);
  if (it == map_.end()) return;
  lru_.erase(it->second.lru);
  map_.erase(it);
}

}  // namespace slipstream::tracer

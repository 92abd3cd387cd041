#include "tracer/pidfd_cache.h"

#include "tracer/target.h"

namespace slipstream::tracer {

Result<int> PidfdCache::Get(pid_t tid) {
  if (auto it = map_.find(tid); it != map_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.pidfd.Get();
  }
  auto fd = TargetAccess::OpenPidfd(tid, pidfd_thread_);
  if (!fd) return tl::unexpected(fd.error());
  if (!pidfd_thread_) {
    last_ = std::move(*fd);
    return last_.Get();
  }
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(tid);
  int raw = fd->Get();
  map_.emplace(tid, Entry{std::move(*fd), lru_.begin()});
  return raw;
}

void PidfdCache::Invalidate(pid_t tid) {
  auto it = map_.find(tid);
  if (it == map_.end()) return;
  lru_.erase(it->second.lru);
  map_.erase(it);
}

}  // namespace slipstream::tracer

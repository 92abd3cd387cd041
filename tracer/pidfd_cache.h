// PidfdCache: pidfds of recently trapping threads, so that a notification costs no pidfd_open.
//
// A pidfd never refers to a recycled pid: if the thread behind a cached pidfd has exited and its
// tid was reused, pidfd_getfd on the old pidfd fails with ESRCH and the caller reopens
// (Invalidate). Memory reads go by tid and are validated by NOTIF_ID_VALID (tracer/target.h).
// Only thread pidfds (PIDFD_THREAD, Linux 6.9) are cached: without it a tid is opened as its
// process, which stays alive after the thread exits, so a cached entry would outlive a reused tid
// and name the wrong process. Then every Get opens afresh (`last_` keeps it alive until the next).
#ifndef SLIPSTREAM_TRACER_PIDFD_CACHE_H_
#define SLIPSTREAM_TRACER_PIDFD_CACHE_H_

#include <sys/types.h>

#include <list>
#include <unordered_map>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream::tracer {

class PidfdCache {
 public:
  PidfdCache(bool pidfd_thread, size_t capacity = 512)
      : pidfd_thread_(pidfd_thread), capacity_(capacity) {}
  // A pidfd for `tid`, owned by the cache (valid until the next Get or Invalidate).
  Result<int> Get(pid_t tid);
  void Invalidate(pid_t tid);
  size_t size() const { return map_.size(); }

 private:
  struct Entry {
    UniqueFd pidfd;
    std::list<pid_t>::iterator lru;
  };
  bool pidfd_thread_;
  size_t capacity_;
  UniqueFd last_;  // the uncached pidfd of the latest Get without PIDFD_THREAD
  std::unordered_map<pid_t, Entry> map_;
  std::list<pid_t> lru_;  // most recent first
};

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_PIDFD_CACHE_H_

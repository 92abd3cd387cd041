// PidfdCache: pidfds of recently trapping threads, so that a notification costs no pidfd_open.
//
// A pidfd never refers to a recycled pid: if the thread behind a cached pidfd has exited and its
// tid was reused, pidfd_getfd on the old pidfd fails with ESRCH and the caller reopens
// (Invalidate). Memory reads go by tid and are validated by NOTIF_ID_VALID (tracer/target.h).
// Without PIDFD_THREAD (Linux 6.9) a tid is opened as its process, which stays alive after the
// thread exits: a reused tid would find the wrong process's pidfd. There every Get checks the
// tid's process (/proc, one read) against the entry's and reopens when they differ.
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
    pid_t tgid = 0;  // the process the pidfd names (without PIDFD_THREAD)
    std::list<pid_t>::iterator lru;
  };
  bool pidfd_thread_;
  size_t capacity_;
  std::unordered_map<pid_t, Entry> map_;
  std::list<pid_t> lru_;  // most recent first
};

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_PIDFD_CACHE_H_

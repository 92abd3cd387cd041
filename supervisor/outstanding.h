// OutstandingTable: the ids of notifications the supervisor has received but not yet answered, in
// memory shared with the shepherd.
//
// Why: if the supervisor is killed, the kernel will not hand those notifications out again, and a
// target blocked in one (a server in accept) would hang forever. The shepherd answers every id
// listed here with CONTINUE when it takes over (docs/design.md, "fail open").
#ifndef SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_
#define SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "base/result.h"

namespace slipstream::supervisor {

class OutstandingTable {
 public:
  static constexpr int kSlots = 16384;

  // Maps a MAP_SHARED anonymous region; created before the shepherd is forked.
  static Result<OutstandingTable> Create();
  OutstandingTable(OutstandingTable&& other) noexcept;
  OutstandingTable& operator=(OutstandingTable&&) = delete;
  ~OutstandingTable();

  // What the shepherd answers for a call: kContinue, kReturnZero, a negative errno, or, for
  // kConnectProbe, 0 if the socket behind fd `probe_fd` of process `probe_pid` is connected by
  // then and CONTINUE otherwise (set before the supervisor connects its copy: a kill during that
  // connect() lets the kernel finish it, and the supervisor dies before it could record more).
  static constexpr int32_t kContinue = 0;
  static constexpr int32_t kReturnZero = 1;
  static constexpr int32_t kConnectProbe = 2;

  // Supervisor side. Add returns the slot, or -1 when every slot is taken (the shepherd then falls
  // back to probing ids just above the highest one recorded).
  int Add(uint64_t id);
  void Remove(int slot);
  void SetFallback(int slot, int32_t fallback);
  void SetConnectProbe(int slot, pid_t pid, int fd);

  // Shepherd side, after the supervisor died.
  struct Entry {
    uint64_t id;
    int32_t fallback;
    pid_t probe_pid;
    int probe_fd;
  };
  std::vector<Entry> Entries() const;
  std::vector<uint64_t> Snapshot() const;  // the ids of Entries()
  uint64_t highest_id() const;
  bool any_received() const;

 private:
  struct Page {
    std::atomic<uint64_t> highest_id;
    std::atomic<uint32_t> any_received;
    std::atomic<uint8_t> used[kSlots];
    std::atomic<uint64_t> ids[kSlots];
    std::atomic<int32_t> fallbacks[kSlots];
    std::atomic<int32_t> probe_pids[kSlots];
    std::atomic<int32_t> probe_fds[kSlots];
  };
  explicit OutstandingTable(Page* page);
  Page* page_;
  std::vector<int> free_;  // supervisor-private free list
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_

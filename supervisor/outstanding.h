// OutstandingTable: the ids of notifications the supervisor has received but not yet answered, in
// memory shared with the shepherd.
//
// Why: if the supervisor is killed, the kernel will not hand those notifications out again, and a
// target blocked in one (a server in accept) would hang forever. The shepherd answers every id
// listed here with CONTINUE when it takes over (docs/design.md, "fail open").
#ifndef SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_
#define SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_

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

  // Supervisor side. Add returns the slot, or -1 when every slot is taken (the shepherd then falls
  // back to probing ids just above the highest one recorded).
  int Add(uint64_t id);
  void Remove(int slot);

  // Shepherd side, after the supervisor died.
  std::vector<uint64_t> Snapshot() const;
  uint64_t highest_id() const;
  bool any_received() const;

 private:
  struct Page {
    std::atomic<uint64_t> highest_id;
    std::atomic<uint32_t> any_received;
    std::atomic<uint8_t> used[kSlots];
    std::atomic<uint64_t> ids[kSlots];
  };
  explicit OutstandingTable(Page* page);
  Page* page_;
  std::vector<int> free_;  // supervisor-private free list
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_

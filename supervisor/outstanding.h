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

  // What the shepherd answers for a call: kContinue, kReturnZero, or a negative errno.
  static constexpr int32_t kContinue = 0;
  static constexpr int32_t kReturnZero = 1;

  // Supervisor side. Add returns the slot, or -1 when every slot is taken (the shepherd then falls
  // back to probing ids just above the highest one recorded).
  int Add(uint64_t id);
  void Remove(int slot);
  void SetFallback(int slot, int32_t fallback);

  // Shepherd side, after the supervisor died.
  struct Entry {
    uint64_t id;
    int32_t fallback;
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
  };
  explicit OutstandingTable(Page* page);
  Page* page_;
  std::vector<int> free_;  // supervisor-private free list
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_OUTSTANDING_H_

#include "supervisor/outstanding.h"

#include <sys/mman.h>

#include <utility>

namespace slipstream::supervisor {

Result<OutstandingTable> OutstandingTable::Create() {
  void* mem =
      mmap(nullptr, sizeof(Page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return Errno("mmap(outstanding)");
  return OutstandingTable(static_cast<Page*>(mem));  // zero-filled by the kernel
}

OutstandingTable::OutstandingTable(Page* page) : page_(page) {
  free_.reserve(kSlots);
  for (int i = kSlots - 1; i >= 0; --i) free_.push_back(i);
}

OutstandingTable::OutstandingTable(OutstandingTable&& other) noexcept
    : page_(std::exchange(other.page_, nullptr)), free_(std::move(other.free_)) {}

OutstandingTable::~OutstandingTable() {
  if (page_ != nullptr) munmap(page_, sizeof(Page));
}

int OutstandingTable::Add(uint64_t id) {
  if (!page_->any_received.load(std::memory_order_relaxed) ||
      id > page_->highest_id.load(std::memory_order_relaxed)) {
    page_->highest_id.store(id, std::memory_order_release);
  }
  page_->any_received.store(1, std::memory_order_release);
  if (free_.empty()) return -1;
  int slot = free_.back();
  free_.pop_back();
  page_->ids[slot].store(id, std::memory_order_relaxed);
  page_->fallbacks[slot].store(kContinue, std::memory_order_relaxed);
  page_->used[slot].store(1, std::memory_order_release);
  return slot;
}

void OutstandingTable::SetFallback(int slot, int32_t fallback) {
  if (slot >= 0) page_->fallbacks[slot].store(fallback, std::memory_order_release);
}

void OutstandingTable::SetConnectProbe(int slot, pid_t pid, int fd) {
  if (slot < 0) return;
  page_->probe_pids[slot].store(pid, std::memory_order_relaxed);
  page_->probe_fds[slot].store(fd, std::memory_order_relaxed);
  page_->fallbacks[slot].store(kConnectProbe, std::memory_order_release);
}

void OutstandingTable::Remove(int slot) {
  if (slot < 0) return;
  page_->used[slot].store(0, std::memory_order_release);
  free_.push_back(slot);
}

std::vector<OutstandingTable::Entry> OutstandingTable::Entries() const {
  std::vector<Entry> entries;
  for (int i = 0; i < kSlots; ++i) {
    if (page_->used[i].load(std::memory_order_acquire)) {
      int32_t fallback = page_->fallbacks[i].load(std::memory_order_acquire);
      entries.push_back({page_->ids[i].load(std::memory_order_relaxed), fallback,
                         page_->probe_pids[i].load(std::memory_order_relaxed),
                         page_->probe_fds[i].load(std::memory_order_relaxed)});
    }
  }
  return entries;
}

std::vector<uint64_t> OutstandingTable::Snapshot() const {
  std::vector<uint64_t> ids;
  for (const Entry& e : Entries()) ids.push_back(e.id);
  return ids;
}

uint64_t OutstandingTable::highest_id() const {
  return page_->highest_id.load(std::memory_order_acquire);
}

bool OutstandingTable::any_received() const {
  return page_->any_received.load(std::memory_order_acquire) != 0;
}

}  // namespace slipstream::supervisor

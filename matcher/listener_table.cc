#include "matcher/listener_table.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/unique_fd.h"

namespace slipstream::matcher {

namespace {

// The table's file, created (0600) or reused, at least its full size.
Result<UniqueFd> OpenFullSize(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Errno("open(listener table)");
  struct stat st;
  if (fstat(fd.Get(), &st) < 0) return Errno("fstat(listener table)");
  if (!S_ISREG(st.st_mode)) return Error(EINVAL, "listener table is not a file");
  constexpr auto kSize = static_cast<off_t>(sizeof(slipstream_listener_table));
  if (st.st_size < kSize && ftruncate(fd.Get(), kSize) < 0) return Errno("ftruncate");
  return fd;
}

}  // namespace

Status ListenerTable::Provide(const std::string& path) {
  auto fd = OpenFullSize(path);
  if (!fd) return tl::unexpected(fd.error());
  return {};
}

Result<ListenerTable> ListenerTable::Open(const std::string& path, mode_t mode) {
  auto file = OpenFullSize(path);
  if (!file) return tl::unexpected(file.error());
  UniqueFd fd = std::move(*file);
  // Also for a file a predecessor left with another mode (a daemon without --all-users).
  if (fchmod(fd.Get(), mode) < 0) return Errno("fchmod(listener table)");
  void* p = mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd.Get(), 0);
  if (p == MAP_FAILED) return Errno("mmap(listener table)");
  auto* t = static_cast<slipstream_listener_table*>(p);
  // A predecessor's bits are stale: clear them (supervisors re-register their listeners). Readers
  // meanwhile see fewer supervised ports, as they would while no daemon runs. The accept gates
  // are the supervisors' and stay as they are.
  for (auto& word : t->ports) __atomic_store_n(&word, 0, __ATOMIC_RELEASE);
  __atomic_fetch_add(&t->generation, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&t->magic, SLIPSTREAM_TABLE_MAGIC, __ATOMIC_RELEASE);
  return ListenerTable(t);
}

AcceptGate::~AcceptGate() {
  if (table_ != nullptr) munmap(table_, sizeof(*table_));
}

slipstream_listener_table* AcceptGate::Map() {
  if (table_ == nullptr) {
    UniqueFd fd(open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    struct stat st;
    if (!fd || fstat(fd.Get(), &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size < static_cast<off_t>(sizeof(slipstream_listener_table))) {
      return nullptr;
    }
    void* p = mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd.Get(), 0);
    if (p == MAP_FAILED) return nullptr;
    table_ = static_cast<slipstream_listener_table*>(p);
  }
  return table_;
}

uint32_t* AcceptGate::Counter(Kind kind, uint16_t port) {
  if (Map() == nullptr) return nullptr;
  return kind == Kind::kSwitching ? &table_->switching[port] : &table_->parked[port];
}

std::optional<bool> AcceptGate::PortSupervised(uint16_t port) {
  if (Map() == nullptr ||
      __atomic_load_n(&table_->magic, __ATOMIC_ACQUIRE) != SLIPSTREAM_TABLE_MAGIC) {
    return std::nullopt;
  }
  return slipstream_port_supervised(table_, port) != 0;
}

AcceptGate::Count AcceptGate::Raise(Kind kind, uint16_t port) {
  uint32_t* counter = Counter(kind, port);
  if (counter == nullptr) return Count();
  // Sequentially consistent: the raise must be visible to an accept that takes a connection whose
  // connect() we start after this (the handshake orders the two processes through the kernel).
  __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
  return Count(counter);
}

std::optional<uint32_t> AcceptGate::Read(Kind kind, uint16_t port) {
  uint32_t* counter = Counter(kind, port);
  if (counter == nullptr) return std::nullopt;
  return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

AcceptGate::Count& AcceptGate::Count::operator=(Count&& other) noexcept {
  if (this != &other) {
    Reset();
    counter_ = std::exchange(other.counter_, nullptr);
  }
  return *this;
}

void AcceptGate::Count::Reset() {
  if (counter_ == nullptr) return;
  // Never below zero: another program of the user may have written the file (it only harms
  // that user's accepts), and a count must not wrap around to "always busy".
  uint32_t old = __atomic_load_n(counter_, __ATOMIC_RELAXED);
  while (old != 0 && !__atomic_compare_exchange_n(counter_, &old, old - 1, false, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_RELAXED)) {
  }
  counter_ = nullptr;
}

ListenerTable::~ListenerTable() {
  if (table_ != nullptr) munmap(table_, sizeof(*table_));
}

void ListenerTable::ClearAcceptGates() {
  for (auto& c : table_->switching) __atomic_store_n(&c, 0, __ATOMIC_RELAXED);
  for (auto& c : table_->parked) __atomic_store_n(&c, 0, __ATOMIC_RELAXED);
}

void ListenerTable::Publish(const Ports& ports) {
  bool changed = false;
  for (size_t i = 0; i < ports.size(); ++i) {
    if (__atomic_load_n(&table_->ports[i], __ATOMIC_RELAXED) == ports[i]) continue;
    __atomic_store_n(&table_->ports[i], ports[i], __ATOMIC_RELEASE);
    changed = true;
  }
  if (changed) __atomic_fetch_add(&table_->generation, 1, __ATOMIC_RELEASE);
}

}  // namespace slipstream::matcher

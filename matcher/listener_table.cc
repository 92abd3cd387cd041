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

namespace {

// Lowers `*counter` by one unless it is 0 (never wrapping around to "always busy"); whether it did.
bool LowerOne(uint32_t* counter) {
  uint32_t old = __atomic_load_n(counter, __ATOMIC_RELAXED);
  while (old != 0 && !__atomic_compare_exchange_n(counter, &old, old - 1, false, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_RELAXED)) {
  }
  return old != 0;
}

// Lowers `*counter` by `n`, stopping at 0 (someone else may have zeroed it: ClearAcceptGates).
void LowerBy(uint32_t* counter, uint32_t n) {
  uint32_t old = __atomic_load_n(counter, __ATOMIC_RELAXED);
  while (old != 0 && !__atomic_compare_exchange_n(counter, &old, old > n ? old - n : 0, false,
                                                  __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
}

constexpr size_t kLedgerSize = sizeof(GateLedger::Counts);

}  // namespace

Result<GateLedger> GateLedger::Create() {
  UniqueFd fd(memfd_create("slipstream-gate-ledger", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return Errno("memfd_create(gate ledger)");
  if (ftruncate(fd.Get(), kLedgerSize) < 0) return Errno("ftruncate(gate ledger)");
  if (fcntl(fd.Get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    return Errno("F_ADD_SEALS(gate ledger)");
  }
  return Adopt(std::move(fd));
}

Result<GateLedger> GateLedger::Adopt(UniqueFd fd) {
  struct stat st;
  if (fstat(fd.Get(), &st) < 0) return Errno("fstat(gate ledger)");
  int seals = fcntl(fd.Get(), F_GET_SEALS);
  if (!S_ISREG(st.st_mode) || st.st_size != static_cast<off_t>(kLedgerSize) || seals < 0 ||
      !(seals & F_SEAL_SHRINK)) {
    return Error(EINVAL, "gate ledger: not a sealed file of the ledger's size");
  }
  void* p = mmap(nullptr, kLedgerSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.Get(), 0);
  if (p == MAP_FAILED) return Errno("mmap(gate ledger)");
  return GateLedger(std::move(fd), static_cast<Counts*>(p));
}

GateLedger::~GateLedger() {
  if (counts_ != nullptr) munmap(counts_, kLedgerSize);
}

uint64_t GateLedger::DrainInto(slipstream_listener_table* table) {
  static_assert(sizeof(Counts::switching) == sizeof(slipstream_listener_table::switching));
  uint64_t lowered = 0;
  auto drain = [&](size_t begin, size_t end) {  // byte offsets, within the ledger
    for (size_t i = begin / sizeof(uint32_t); i < end / sizeof(uint32_t); ++i) {
      bool parked = i >= 65536;
      auto port = static_cast<uint16_t>(i % 65536);
      uint32_t* slot = Counter(parked ? GateKind::kParked : GateKind::kSwitching, port);
      // Written only where something is held: a plain load skips the rest without dirtying
      // their cache lines.
      if (__atomic_load_n(slot, __ATOMIC_RELAXED) == 0) continue;
      uint32_t n = __atomic_exchange_n(slot, 0, __ATOMIC_SEQ_CST);
      lowered += n;
      LowerBy(parked ? &table->parked[port] : &table->switching[port], n);
    }
  };
  // Only the pages ever written: a hole reads as zeros, and touching it would make it memory.
  off_t at = 0;
  while (at < static_cast<off_t>(kLedgerSize)) {
    off_t data = lseek(fd_.Get(), at, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) drain(static_cast<size_t>(at), kLedgerSize);  // cannot tell: all
      break;
    }
    off_t hole = lseek(fd_.Get(), data, SEEK_HOLE);
    if (hole < 0 || hole > static_cast<off_t>(kLedgerSize)) hole = kLedgerSize;
    drain(static_cast<size_t>(data), static_cast<size_t>(hole));
    at = hole;
  }
  return lowered;
}

AcceptGate::AcceptGate(std::string path, bool with_ledger) : path_(std::move(path)) {
  if (!with_ledger) return;
  // Without one (no memfd: Linux < 3.17, or refused), a count of a killed supervisor stays
  // raised until the daemon's idle exit, as preload_abi.h says.
  if (auto ledger = GateLedger::Create()) ledger_.emplace(std::move(*ledger));
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
  // The ledger after the table: killed in between, one count stays raised (the daemon drains
  // only what the ledger holds, once we have exited).
  uint32_t* ledger = ledger_ ? ledger_->Counter(kind, port) : nullptr;
  if (ledger != nullptr) __atomic_fetch_add(ledger, 1, __ATOMIC_SEQ_CST);
  return Count(counter, ledger);
}

void AcceptGate::LowerAll() {
  if (ledger_ && Map() != nullptr) ledger_->DrainInto(table_);
}

uint64_t ListenerTable::Drain(GateLedger& ledger) { return ledger.DrainInto(table_); }

std::optional<uint32_t> AcceptGate::Read(Kind kind, uint16_t port) {
  uint32_t* counter = Counter(kind, port);
  if (counter == nullptr) return std::nullopt;
  return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

AcceptGate::Count& AcceptGate::Count::operator=(Count&& other) noexcept {
  if (this != &other) {
    Reset();
    counter_ = std::exchange(other.counter_, nullptr);
    ledger_ = std::exchange(other.ledger_, nullptr);
  }
  return *this;
}

void AcceptGate::Count::Reset() {
  if (counter_ == nullptr) return;
  // The ledger first: if its entry is 0, the count was lowered for us already (LowerAll ran at
  // our exit, or the daemon drained the ledger of a process that shared it and exited). Never
  // below zero in the table: another program of the user may have written the file (it only
  // harms that user's accepts), and a count must not wrap around to "always busy".
  if (ledger_ == nullptr || LowerOne(ledger_)) LowerOne(counter_);
  counter_ = ledger_ = nullptr;
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

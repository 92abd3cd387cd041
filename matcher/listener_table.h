// ListenerTable: the daemon's shared-memory table of supervised listener ports, which the preload
// library reads in every dynamically linked program under supervision (docs/design.md, "Hybrid
// mode"). One file per runtime directory, never unlinked: a program keeps its mapping across
// daemon restarts, and each new daemon clears and refills the same file.
#ifndef SLIPSTREAM_MATCHER_LISTENER_TABLE_H_
#define SLIPSTREAM_MATCHER_LISTENER_TABLE_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "base/result.h"
#include "base/unique_fd.h"
#include "preload-fallback/preload_abi.h"

namespace slipstream::matcher {

class GateLedger;

class ListenerTable {
 public:
  using Ports = std::array<uint64_t, SLIPSTREAM_TABLE_WORDS>;  // bit p: port p

  // Creates the file or reuses it, gives it `mode` (0600; 0644 for a daemon serving every user,
  // whose programs' preload libraries read it), maps it and clears it.
  [[nodiscard]] static Result<ListenerTable> Open(const std::string& path, mode_t mode = 0600);
  // Creates the file at its full size if it is missing or shorter, leaving what it holds as it
  // is (no magic: readers take it as unknown until a daemon Opens it). For slipstream-trace,
  // before it starts the program: the preload library maps the table once, and a program that
  // starts before slipstreamd has created it, then drops its privileges (nginx's worker runs as
  // nobody), could never open it and would send every accept and connect to the supervisor.
  // EACCES in a system-wide daemon's directory, where only the daemon creates files: the caller
  // goes on without it (that daemon made the table when it started).
  [[nodiscard]] static Status Provide(const std::string& path);
  ListenerTable(ListenerTable&& other) noexcept : table_(other.table_) { other.table_ = nullptr; }
  ListenerTable& operator=(ListenerTable&&) = delete;
  ~ListenerTable();

  static void Mark(Ports& ports, uint16_t port) { ports[port / 64] |= 1ULL << (port % 64); }
  // Makes the table say `ports`: changed words only, each an atomic store, then the generation.
  void Publish(const Ports& ports);
  bool IsSet(uint16_t port) const { return slipstream_port_supervised(table_, port) != 0; }
  // Zeroes every accept gate (preload_abi.h); only when no supervisor can hold a raise.
  void ClearAcceptGates();
  // Lowers what a supervisor whose session ended still held (GateLedger::DrainInto).
  uint64_t Drain(GateLedger& ledger);

 private:
  explicit ListenerTable(slipstream_listener_table* table) : table_(table) {}
  slipstream_listener_table* table_;
};

// The in-process accept's two gates (preload_abi.h).
enum class GateKind { kSwitching, kParked };

// GateLedger: the counts one supervisor holds raised, gate by gate and port by port, in a memfd
// (Linux 3.17) it shares with slipstreamd (kGateLedger), so that counts cannot outlive their
// owner. Once the supervisor has exited (its pidfd says so, matcher/daemon_ledger.cc), the daemon
// lowers in the table whatever the ledger still holds: a supervisor killed mid-switch (SIGKILL, a
// crash) or one that exits without destroying a count (exit() does not unwind) leaves no port
// whose every accept goes to the supervisor. 512 KiB, sparse: only the pages of ports ever raised
// are memory.
class GateLedger {
 public:
  struct Counts {
    uint32_t switching[65536];
    uint32_t parked[65536];
  };

  // A new ledger, all zero, close-on-exec, sealed against shrinking (F_SEAL_SHRINK, Linux 3.17:
  // what keeps a mapping of it from ever faulting with SIGBUS) and, for good, growing
  // (F_SEAL_GROW, F_SEAL_SEAL).
  [[nodiscard]] static Result<GateLedger> Create();
  // A ledger a supervisor sent (the daemon): EINVAL unless a file of exactly the ledger's size
  // that can no longer shrink, so that mapping it is safe whoever holds it.
  [[nodiscard]] static Result<GateLedger> Adopt(UniqueFd fd);
  GateLedger(GateLedger&& other) noexcept
      : fd_(std::move(other.fd_)), counts_(std::exchange(other.counts_, nullptr)) {}
  GateLedger& operator=(GateLedger&&) = delete;
  ~GateLedger();

  int fd() const { return fd_.Get(); }
  uint32_t* Counter(GateKind kind, uint16_t port) {
    return kind == GateKind::kSwitching ? &counts_->switching[port] : &counts_->parked[port];
  }
  // Lowers in `table` every count the ledger holds and zeroes the ledger. Each slot is taken with
  // an atomic exchange, so a Count destroyed later finds 0 and leaves the table alone. For the
  // owner at its exit (AcceptGate::LowerAll) or the daemon once the owner has exited, never while
  // the owner still raises: an entry is per port, not per Count, so after a drain a new raise
  // could be lowered by an older Count's Reset. Reads only the pages ever written (lseek
  // SEEK_DATA, Linux 3.8 on shmem). Returns how many counts it lowered.
  uint64_t DrainInto(slipstream_listener_table* table);

 private:
  GateLedger(UniqueFd fd, Counts* counts) : fd_(std::move(fd)), counts_(counts) {}
  UniqueFd fd_;
  Counts* counts_;
};

// AcceptGate: a supervisor's view of the same file, through which it raises and lowers the
// in-process accept's two gates (`switching`, `parked`: preload_abi.h). The daemon creates the
// file; a supervisor may start first, so the file is mapped on first use, and a gate that cannot
// be mapped (no daemon yet) does nothing: the library then finds no table and traps its accepts.
// A supervisor's gate keeps a GateLedger of its raises (`with_ledger`); the daemon's own raises
// live in its own records, which end with the sessions they belong to.
class AcceptGate {
 public:
  using Kind = GateKind;

  // One raised count, lowered when destroyed (move-only). Empty if the file was not mapped.
  class Count {
   public:
    Count() = default;
    Count(Count&& other) noexcept
        : counter_(std::exchange(other.counter_, nullptr)),
          ledger_(std::exchange(other.ledger_, nullptr)) {}
    Count& operator=(Count&& other) noexcept;
    ~Count() { Reset(); }
    void Reset();
    bool raised() const { return counter_ != nullptr; }

   private:
    friend class AcceptGate;
    Count(uint32_t* counter, uint32_t* ledger) : counter_(counter), ledger_(ledger) {}
    uint32_t* counter_ = nullptr;
    uint32_t* ledger_ = nullptr;  // our entry for it in the ledger, if we keep one
  };

  // With `with_ledger`, raises are also written to a GateLedger (if one can be made: else as
  // without).
  explicit AcceptGate(std::string path, bool with_ledger = false);
  AcceptGate(const AcceptGate&) = delete;
  AcceptGate& operator=(const AcceptGate&) = delete;
  ~AcceptGate();  // every Count must be gone by then

  [[nodiscard]] Count Raise(Kind kind, uint16_t port);
  std::optional<uint32_t> Read(Kind kind, uint16_t port);  // nullopt: the file is not mapped
  // Does a registered (supervised) listener have TCP port `port` (the table's `ports` bit, set
  // before the registering listen() runs)? nullopt: the file is not mapped or was never
  // initialised (no magic), so it cannot be told. While a new daemon re-initialises the file, the
  // bits read clear: true of that daemon, with which no listener is registered yet.
  std::optional<bool> PortSupervised(uint16_t port);
  // Whether Raise() can raise anything: false while the file is missing, or when it is not
  // writable by us (a system-wide daemon's table is root's, 0644).
  bool CanRaise() { return Map() != nullptr; }
  // The ledger's memfd, for slipstreamd (-1: none).
  int ledger_fd() const { return ledger_ ? ledger_->fd() : -1; }
  // At exit: lowers every count still held, whether or not its Count object is ever destroyed.
  void LowerAll();

 private:
  slipstream_listener_table* Map();
  uint32_t* Counter(Kind kind, uint16_t port);

  std::string path_;
  slipstream_listener_table* table_ = nullptr;
  std::optional<GateLedger> ledger_;
};

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_LISTENER_TABLE_H_

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
#include "preload-fallback/preload_abi.h"

namespace slipstream::matcher {

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

 private:
  explicit ListenerTable(slipstream_listener_table* table) : table_(table) {}
  slipstream_listener_table* table_;
};

// AcceptGate: a supervisor's view of the same file, through which it raises and lowers the
// in-process accept's two gates (`switching`, `parked`: preload_abi.h). The daemon creates the
// file; a supervisor may start first, so the file is mapped on first use, and a gate that cannot
// be mapped (no daemon yet) does nothing: the library then finds no table and traps its accepts.
class AcceptGate {
 public:
  enum class Kind { kSwitching, kParked };

  // One raised count, lowered when destroyed (move-only). Empty if the file was not mapped.
  class Count {
   public:
    Count() = default;
    Count(Count&& other) noexcept : counter_(std::exchange(other.counter_, nullptr)) {}
    Count& operator=(Count&& other) noexcept;
    ~Count() { Reset(); }
    void Reset();
    bool raised() const { return counter_ != nullptr; }

   private:
    friend class AcceptGate;
    explicit Count(uint32_t* counter) : counter_(counter) {}
    uint32_t* counter_ = nullptr;
  };

  explicit AcceptGate(std::string path) : path_(std::move(path)) {}
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

 private:
  slipstream_listener_table* Map();
  uint32_t* Counter(Kind kind, uint16_t port);

  std::string path_;
  slipstream_listener_table* table_ = nullptr;
};

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_LISTENER_TABLE_H_

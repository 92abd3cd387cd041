// ListenerTable: the daemon's shared-memory table of supervised listener ports, which the preload
// library reads in every dynamically linked program under supervision (docs/design.md, "Hybrid
// mode"). One file per runtime directory, never unlinked: a program keeps its mapping across
// daemon restarts, and each new daemon clears and refills the same file.
#ifndef SLIPSTREAM_MATCHER_LISTENER_TABLE_H_
#define SLIPSTREAM_MATCHER_LISTENER_TABLE_H_

#include <array>
#include <cstdint>
#include <string>

#include "base/result.h"
#include "preload-fallback/preload_abi.h"

namespace slipstream::matcher {

class ListenerTable {
 public:
  using Ports = std::array<uint64_t, SLIPSTREAM_TABLE_WORDS>;  // bit p: port p

  // Creates the file (0600) or reuses it, maps it and clears it.
  [[nodiscard]] static Result<ListenerTable> Open(const std::string& path);
  ListenerTable(ListenerTable&& other) noexcept : table_(other.table_) { other.table_ = nullptr; }
  ListenerTable& operator=(ListenerTable&&) = delete;
  ~ListenerTable();

  static void Mark(Ports& ports, uint16_t port) { ports[port / 64] |= 1ULL << (port % 64); }
  // Makes the table say `ports`: changed words only, each an atomic store, then the generation.
  void Publish(const Ports& ports);
  bool IsSet(uint16_t port) const { return slipstream_port_supervised(table_, port) != 0; }

 private:
  explicit ListenerTable(slipstream_listener_table* table) : table_(table) {}
  slipstream_listener_table* table_;
};

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_LISTENER_TABLE_H_

#include "matcher/status_text.h"

#include <cstdarg>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace slipstream::matcher {
namespace {

void Append(std::string* out, const char* format, ...) __attribute__((format(printf, 2, 3)));
void Append(std::string* out, const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  int n = vsnprintf(nullptr, 0, format, args);
  va_end(args);
  if (n > 0) {
    size_t at = out->size();
    out->resize(at + static_cast<size_t>(n) + 1);
    vsnprintf(out->data() + at, static_cast<size_t>(n) + 1, format, again);
    out->resize(at + static_cast<size_t>(n));
  }
  va_end(again);
}

// The fields are read only as what they must be: an integer field that holds a string, a float
// (whose conversion to an integer may be undefined) or nothing makes the reply unreadable.
struct Unreadable {};

long long Int(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return static_cast<long long>(v.get<uint64_t>());
  if (v.is_number_integer()) return v.get<int64_t>();
  throw Unreadable{};
}

// Inodes, cookies and counts: unsigned 64-bit (a network namespace cookie may exceed 2^63).
unsigned long long UInt(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  throw Unreadable{};
}

std::string Text(const nlohmann::json& v) {
  if (!v.is_string()) throw Unreadable{};
  return v.get<std::string>();
}

const nlohmann::json& Field(const nlohmann::json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) throw Unreadable{};
  return object[key];
}

// A field that older daemons did not write: `fallback` when absent.
unsigned long long UIntOr(const nlohmann::json& object, const char* key) {
  return object.contains(key) ? UInt(object[key]) : 0;
}

std::string Format(const nlohmann::json& j) {
  std::string out;
  const auto& connections = Field(j, "connections");
  const auto& supervisors = Field(j, "supervisors");
  if (!connections.is_array() || !supervisors.is_array()) throw Unreadable{};
  unsigned long long total = UInt(Field(j, "connections_total"));
  Append(&out,
         "slipstreamd pid %lld, %zu supervisor(s), %llu listener(s), %llu switched connection(s), "
         "%llu pending, %llu paired, %llu relayed since start\n",
         Int(Field(j, "pid")), supervisors.size(), UIntOr(j, "listeners_total"), total,
         UInt(Field(j, "pending")), UInt(Field(j, "pairs_total")), UInt(Field(j, "relays_total")));
  if (connections.empty()) return out;
  // NAMESPACES: the SO_NETNS_COOKIE of the client's and the server's network namespace.
  Append(&out, "%-8s %-28s %-8s %-28s %-16s %-12s %s\n", "CLIENT", "CLIENT ADDRESS", "SERVER",
         "SERVER ADDRESS", "UNIX INODES", "NAMESPACES", "PAIRED BY");
  for (const auto& c : connections) {
    std::string inodes = std::to_string(UInt(Field(c, "client_unix_inode"))) + "<->" +
                         std::to_string(UInt(Field(c, "server_unix_inode")));
    std::string namespaces = std::to_string(UIntOr(c, "client_netns")) + "->" +
                             std::to_string(UIntOr(c, "server_netns"));
    std::string evidence = c.contains("evidence") ? Text(c["evidence"]) : std::string();
    Append(&out, "%-8lld %-28s %-8lld %-28s %-16s %-12s %s\n", Int(Field(c, "client_pid")),
           Text(Field(c, "client")).c_str(), Int(Field(c, "server_pid")),
           Text(Field(c, "server")).c_str(), inodes.c_str(), namespaces.c_str(),
           evidence == "tcp-sequence-numbers" ? "tcp seq" : "4-tuple");
  }
  if (connections.size() < total) {
    Append(&out, "(%zu of %llu listed)\n", connections.size(), total);
  }
  return out;
}

}  // namespace

std::optional<std::string> StatusText(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  try {
    return Format(j);
  } catch (const Unreadable&) {
    return std::nullopt;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace slipstream::matcher

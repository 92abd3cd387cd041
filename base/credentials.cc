#include "base/credentials.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>

#include "base/syscalls.h"

namespace slipstream {

Result<uint64_t> EffectiveCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) < 0) return Errno("capget");
  return (static_cast<uint64_t>(data[1].effective) << 32) | data[0].effective;
}

bool HasEffectiveCapability(int cap) {
  if (cap < 0 || cap > 63) return false;
  auto caps = EffectiveCapabilities();
  return caps && ((*caps >> cap) & 1) != 0;
}

bool InBoundingSet(int cap) { return prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1; }

std::optional<int> ParseSeccompMode(std::string_view status_text) {
  constexpr std::string_view kField = "\nSeccomp:";
  size_t at = status_text.find(kField);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = status_text.substr(at + kField.size());
  size_t first = rest.find_first_not_of(" \t");
  if (first == std::string_view::npos) return std::nullopt;
  rest = rest.substr(first);
  int mode = -1;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), mode);
  if (ec != std::errc() || mode < 0 || mode > 2) return std::nullopt;
  if (end != rest.data() + rest.size() && *end != '\n') return std::nullopt;
  return mode;
}

std::optional<int> SeccompMode() {
  auto text = ReadSmallFile("/proc/self/status");
  if (!text) return std::nullopt;
  return ParseSeccompMode(*text);
}

}  // namespace slipstream

// The text `slipstreamd --status` prints, made from the daemon's status JSON (kStatusReply). The
// JSON comes from whatever answers on the daemon's socket: it is read as untrusted input (a
// missing field or one of another type makes it unreadable, never an exception).
#ifndef SLIPSTREAM_MATCHER_STATUS_TEXT_H_
#define SLIPSTREAM_MATCHER_STATUS_TEXT_H_

#include <optional>
#include <string>

namespace slipstream::matcher {

// nullopt when `json` is not a status the daemon writes.
std::optional<std::string> StatusText(const std::string& json);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_STATUS_TEXT_H_

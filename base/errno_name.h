#ifndef SLIPSTREAM_BASE_ERRNO_NAME_H_
#define SLIPSTREAM_BASE_ERRNO_NAME_H_

namespace slipstream {

// "ECONNREFUSED" for ECONNREFUSED; "E<number>" for values without a name. Async-signal-safe for
// known values (returns a static string).
const char* ErrnoName(int err);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_ERRNO_NAME_H_

// Result<T>: what every syscall wrapper returns. The error side carries errno and the operation
// name.
#ifndef SLIPSTREAM_BASE_RESULT_H_
#define SLIPSTREAM_BASE_RESULT_H_

#include <cerrno>
#include <string>

#include <tl/expected.hpp>

namespace slipstream {

struct SysError {
  int err = 0;          // errno value, positive
  const char* op = "";  // static string naming the failed call, e.g. "ioctl(NOTIF_ADDFD)"

  // ENOENT from a notification ioctl means the target was interrupted or has exited: an expected
  // race.
  bool TargetGone() const { return err == ENOENT; }
  std::string ToString() const;
};

template <class T>
using Result = tl::expected<T, SysError>;
using Status = Result<void>;

// Captures errno right after a failing call.
inline tl::unexpected<SysError> Errno(const char* op) {
  return tl::unexpected(SysError{errno, op});
}
inline tl::unexpected<SysError> Error(int err, const char* op) {
  return tl::unexpected(SysError{err, op});
}

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_RESULT_H_

// UniqueFd: the one owning file-descriptor type of Slipstream.
//
// Move-only; closes on destruction. Pass by value to hand over ownership. Never store an owning raw
// int.
#ifndef SLIPSTREAM_BASE_UNIQUE_FD_H_
#define SLIPSTREAM_BASE_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace slipstream {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  ~UniqueFd() { Reset(); }

  int Get() const noexcept { return fd_; }
  bool Valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return Valid(); }

  // Gives up ownership without closing.
  [[nodiscard]] int Release() noexcept { return std::exchange(fd_, -1); }

  // Closes the held fd (if any) and takes ownership of `fd`. close() errors are ignored on purpose:
  // after close(2) fails the fd is gone on Linux anyway, and retrying could close a reused number.
  void Reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_UNIQUE_FD_H_

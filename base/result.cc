#include "base/result.h"

#include "base/errno_name.h"

namespace slipstream {

std::string SysError::ToString() const {
  return std::string(op) + ": " + ErrnoName(err) + " (" + std::to_string(err) + ")";
}

}  // namespace slipstream

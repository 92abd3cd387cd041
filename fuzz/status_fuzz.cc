// The status JSON (kStatusReply) as slipstreamd --status reads it: StatusText with any text. The
// only C++ reader of that JSON; the tests read it with Python's json module.
#include <string>

#include "matcher/status_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)slipstream::matcher::StatusText(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}

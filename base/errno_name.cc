#include "base/errno_name.h"

#include <cerrno>

namespace slipstream {

const char* ErrnoName(int err) {
  switch (err) {
#define SLIPSTREAM_ERRNO(e) \
  case e:                   \
    return #e;
    SLIPSTREAM_ERRNO(EPERM)
    SLIPSTREAM_ERRNO(ENOENT) SLIPSTREAM_ERRNO(ESRCH) SLIPSTREAM_ERRNO(EINTR) SLIPSTREAM_ERRNO(
        EIO) SLIPSTREAM_ERRNO(ENXIO) SLIPSTREAM_ERRNO(E2BIG) SLIPSTREAM_ERRNO(ENOEXEC)
        SLIPSTREAM_ERRNO(EBADF) SLIPSTREAM_ERRNO(ECHILD) SLIPSTREAM_ERRNO(EAGAIN) SLIPSTREAM_ERRNO(
            ENOMEM) SLIPSTREAM_ERRNO(EACCES) SLIPSTREAM_ERRNO(EFAULT) SLIPSTREAM_ERRNO(EBUSY)
            SLIPSTREAM_ERRNO(EEXIST) SLIPSTREAM_ERRNO(ENODEV) SLIPSTREAM_ERRNO(
                ENOTDIR) SLIPSTREAM_ERRNO(EISDIR) SLIPSTREAM_ERRNO(EINVAL) SLIPSTREAM_ERRNO(ENFILE)
                SLIPSTREAM_ERRNO(EMFILE) SLIPSTREAM_ERRNO(ENOTTY) SLIPSTREAM_ERRNO(ENOSPC)
                    SLIPSTREAM_ERRNO(EPIPE) SLIPSTREAM_ERRNO(ERANGE) SLIPSTREAM_ERRNO(ENOSYS)
                        SLIPSTREAM_ERRNO(ENOTSOCK) SLIPSTREAM_ERRNO(EDESTADDRREQ) SLIPSTREAM_ERRNO(
                            EMSGSIZE) SLIPSTREAM_ERRNO(EPROTOTYPE) SLIPSTREAM_ERRNO(ENOPROTOOPT)
                            SLIPSTREAM_ERRNO(EPROTONOSUPPORT) SLIPSTREAM_ERRNO(ESOCKTNOSUPPORT)
                                SLIPSTREAM_ERRNO(EOPNOTSUPP) SLIPSTREAM_ERRNO(EPFNOSUPPORT)
                                    SLIPSTREAM_ERRNO(EAFNOSUPPORT) SLIPSTREAM_ERRNO(EADDRINUSE)
                                        SLIPSTREAM_ERRNO(EADDRNOTAVAIL) SLIPSTREAM_ERRNO(
                                            ENETDOWN) SLIPSTREAM_ERRNO(ENETUNREACH)
                                            SLIPSTREAM_ERRNO(ENETRESET) SLIPSTREAM_ERRNO(
                                                ECONNABORTED) SLIPSTREAM_ERRNO(ECONNRESET)
                                                SLIPSTREAM_ERRNO(ENOBUFS) SLIPSTREAM_ERRNO(
                                                    EISCONN) SLIPSTREAM_ERRNO(ENOTCONN)
                                                    SLIPSTREAM_ERRNO(ESHUTDOWN) SLIPSTREAM_ERRNO(
                                                        ETIMEDOUT) SLIPSTREAM_ERRNO(ECONNREFUSED)
                                                        SLIPSTREAM_ERRNO(EHOSTDOWN)
                                                            SLIPSTREAM_ERRNO(EHOSTUNREACH)
                                                                SLIPSTREAM_ERRNO(EALREADY)
                                                                    SLIPSTREAM_ERRNO(EINPROGRESS)
#undef SLIPSTREAM_ERRNO
                                                                        case 512
        :  // kernel-internal; only ever seen in our own answers (held calls)
           return "ERESTARTSYS";
    default:
      return "E?";
  }
}

}  // namespace slipstream

/* Socket options of switched sockets answered in the program (options.c), so that a program that
 * sets TCP_NODELAY or keepalive timers on each connection makes no trapped call for it. Internal
 * to libslipstream-preload.so. */
#ifndef SLIPSTREAM_PRELOAD_OPTIONS_H_
#define SLIPSTREAM_PRELOAD_OPTIONS_H_

#include <sys/socket.h>

/* The IPPROTO_TCP options whose value the library keeps per switched socket: on an AF_UNIX stream
 * they change nothing, so TCP's answer is only the value read back. */
enum slipstream_kept_option {
  SLIPSTREAM_KEPT_NODELAY,
  SLIPSTREAM_KEPT_CORK,
  SLIPSTREAM_KEPT_KEEPIDLE,
  SLIPSTREAM_KEPT_KEEPINTVL,
  SLIPSTREAM_KEPT_KEEPCNT,
  SLIPSTREAM_KEPT_USER_TIMEOUT,
  SLIPSTREAM_KEPT_OPTIONS
};

/* setsockopt and getsockopt on `fd` when it is a switched socket the library knows (names.c):
 * served here, with the kernel's errors in the kernel's order, returning 1 and the call's result
 * (0, or -errno) in *result. 0: not served here, nothing changed, errno kept. getsockopt also
 * answers SO_DOMAIN and SO_PROTOCOL (the TCP socket's) and a kept option set in this process; a
 * kept option not set here yet is left to the supervisor, which reads it from the retained TCP
 * socket. */
int slipstream_options_set(int fd, int level, int name, const void* value, socklen_t len,
                           long* result);
int slipstream_options_get(int fd, int level, int name, void* value, socklen_t* len, long* result);

#endif /* SLIPSTREAM_PRELOAD_OPTIONS_H_ */

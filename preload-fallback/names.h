/* Addresses of switched sockets, kept in the program so that getsockname() and getpeername() of
 * a switched socket cost no notification (names.c). Internal to libslipstream-preload.so. */
#ifndef SLIPSTREAM_PRELOAD_NAMES_H_
#define SLIPSTREAM_PRELOAD_NAMES_H_

#include <sys/socket.h>

#include "options.h"
#include "preload_abi.h"

/* Whether addresses can be kept for `fd` at all (the table has a fixed size). */
int slipstream_names_keeps(int fd);
/* Remembers the TCP addresses of the switched socket now in `fd`, whose AF_UNIX end has inode
 * `ino` (0: read it here, from the file `fd` names now). */
void slipstream_names_store(int fd, uint64_t ino, const struct slipstream_names* names);
/* Drops what is kept for `fd`, which the program closes or overwrites (close, dup2, dup3): a
 * later socket at that number then costs no fstat() to find the entry stale. */
void slipstream_names_forget(int fd);
/* Answers getsockname (peer 0) or getpeername (peer 1) of `fd` from what was stored, as the
 * kernel's move_addr_to_user() would, and returns 1. Otherwise changes nothing and returns 0 when
 * nothing is stored for the file `fd` names now, or -1 when something is but cannot give the exact
 * answer here: the connection is no longer fully open, or the caller's memory is not
 * readable/writable (the supervisor then gives the exact answer or EFAULT). Keeps errno. */
int slipstream_names_answer(int fd, int peer, struct sockaddr* addr, socklen_t* len);

/* The family (AF_INET or AF_INET6) of the TCP socket behind the switched socket now in `fd`, or 0
 * when nothing is stored for the file `fd` names now. Keeps errno. */
int slipstream_names_family(int fd);
/* Kept option `index` (options.h) of the switched socket now in `fd`: 1 with the value read back
 * when it was set in this process, 0 when it was not (the retained TCP socket has it), -1 when
 * nothing is stored for the file `fd` names now. Keeps errno. */
int slipstream_names_option(int fd, int index, int* value);
/* Keeps `value` (as read back) for option `index` of the switched socket in `fd`, which the caller
 * has just found current with slipstream_names_family(). */
void slipstream_names_set_option(int fd, int index, int value);

#endif /* SLIPSTREAM_PRELOAD_NAMES_H_ */

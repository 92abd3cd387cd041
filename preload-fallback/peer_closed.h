/* Writes to a switched socket whose peer has closed, as TCP answers them (peer_closed.c).
 * Internal to libslipstream-preload.so. */
#ifndef SLIPSTREAM_PRELOAD_PEER_CLOSED_H_
#define SLIPSTREAM_PRELOAD_PEER_CLOSED_H_

#include <sys/socket.h>

/* From preload.c: whether the library is active with switching, and whether `fd` may be a
 * switched end (an unnamed, connected AF_UNIX socket). Both keep errno. */
int slipstream_preload_switching(void);
int slipstream_may_switched(int fd);
/* getsockopt(SO_ERROR) in-process: the pending error of `fd`, now cleared (0 if none). Keeps
 * errno. */
int slipstream_take_socket_error(int fd);

/* preload.c tells: `fd` came out of a connect() or accept() that the supervisor served. */
void slipstream_note_connection(int fd);
/* preload.c tells: `fd` is a TCP socket that came out of an accept() served in-process. */
void slipstream_note_tcp(int fd);
/* preload.c tells: the program's getsockopt(fd, SOL_SOCKET, SO_ERROR, value, len) succeeded. A
 * reset taken that way (ECONNRESET) is remembered, as after a read that reported it. */
void slipstream_note_socket_error(int fd, const void* value, const socklen_t* len);
/* preload.c tells: the program shut the write side of `fd` (its EPIPE is then TCP's at once). */
void slipstream_note_write_shut(int fd);

#endif /* SLIPSTREAM_PRELOAD_PEER_CLOSED_H_ */

/* The program's own memory, touched only through process_vm_readv/writev (Linux 3.2): where the
 * kernel would fail a call with EFAULT, the library must not fault instead. Internal to
 * libslipstream-preload.so; async-signal-safe. Both may change errno. */
#ifndef SLIPSTREAM_PRELOAD_SELF_MEMORY_H_
#define SLIPSTREAM_PRELOAD_SELF_MEMORY_H_

#include <stddef.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Copies `n` bytes at the caller's `remote` into `local`; 1 if all could be read. */
static inline int slipstream_read_self(void* local, const void* remote, size_t n) {
  if (n == 0) return 1;
  struct iovec l = {local, n}, r = {(void*)remote, n};
  return syscall(SYS_process_vm_readv, syscall(SYS_getpid), &l, 1, &r, 1, 0) == (long)n;
}

/* Copies `n` bytes of `local` to the caller's `remote`; 1 if all could be written. */
static inline int slipstream_write_self(void* remote, const void* local, size_t n) {
  if (n == 0) return 1;
  struct iovec l = {(void*)local, n}, r = {remote, n};
  return syscall(SYS_process_vm_writev, syscall(SYS_getpid), &l, 1, &r, 1, 0) == (long)n;
}

#endif /* SLIPSTREAM_PRELOAD_SELF_MEMORY_H_ */

// Kernel features Slipstream uses, probed once at start (never guessed from the version string).
#ifndef SLIPSTREAM_TRACER_PROBE_H_
#define SLIPSTREAM_TRACER_PROBE_H_

#include <optional>
#include <string>

#include "tracer/diagnosis.h"

namespace slipstream::tracer {

struct KernelFeatures {
  std::string release;         // uname -r, for messages
  bool user_notif = false;     // SECCOMP_RET_USER_NOTIF 5.0 with FLAG_CONTINUE 5.5
  bool addfd = false;          // SECCOMP_IOCTL_NOTIF_ADDFD, 5.9
  bool addfd_send = false;     // SECCOMP_ADDFD_FLAG_SEND, 5.14
  bool wait_killable = false;  // SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, 5.19
  bool pidfd_getfd = false;    // 5.6
  bool process_vm = false;     // process_vm_readv/writev, 3.2 (a container's profile may refuse)
  bool pidfd_thread = false;   // PIDFD_THREAD, 6.9
  bool sync_wakeup = false;    // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 6.6
  // move_addr_to_user() stores the address length before the address (newer kernels), so an
  // unwritable address buffer fails after the length was updated. Emulation must match.
  bool addrlen_first = false;

  // Evidence for the diagnoses: what refused a feature, read from the kernel.
  int user_notif_err = 0;            // errno of seccomp(NEW_LISTENER) in the probe child
  bool filter_installed = false;     // it worked, whether or not FLAG_CONTINUE (5.5) did
  int pidfd_getfd_err = 0;           // errno of pidfd_getfd on our own process
  int process_vm_err = 0;            // errno of process_vm_readv/writev on our own process
  std::optional<int> seccomp_mode;   // "Seccomp:" of /proc/self/status (2: a filter is in place)
  bool cap_sys_admin = false;        // effective: no NO_NEW_PRIVS needed
  bool sys_ptrace_bounding = false;  // CAP_SYS_PTRACE in the bounding set (docker --cap-add)

  // Can the supervisor act on calls (emulate, switch) rather than only watch them? Emulation
  // reads and writes the program's memory (addresses, lengths) with process_vm_readv/writev.
  bool CanEmulate() const { return user_notif && pidfd_getfd && process_vm && addfd && addfd_send; }
  std::string Describe() const;

  // Why user notification / pidfd_getfd is unavailable (nullopt: it is available).
  std::optional<Diagnosis> WhyNoUserNotif() const;
  std::optional<Diagnosis> WhyNoPidfdGetfd() const;
  std::optional<Diagnosis> WhyNoProcessVm() const;
};

// Asks the kernel to wake the target on the replying CPU (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
// Linux 6.6): the target and the supervisor ping-pong, and a synchronous wake-up saves a
// cross-CPU wake-up per trapped call (measured in docs/BENCHMARKS.md).
bool SetSyncWakeup(int notify_fd);

// Forks a short-lived child that installs a do-nothing filter with a notification fd and tries each
// ioctl and flag on it. Safe to call only while the process is single-threaded.
KernelFeatures ProbeKernel();

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_PROBE_H_

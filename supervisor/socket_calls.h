// SocketCalls: what the supervisor does with each trapped socket call.
//
// The rule for every call (docs/design.md, "TOCTOU and exact errors"): copy the pointer arguments
// and take copies of the fds first; if anything cannot be read or taken, answer CONTINUE so the
// kernel produces its own exact error. Otherwise check NOTIF_ID_VALID, run the call on the copy
// with the copied arguments, write results back the way the kernel would, and answer.
#ifndef SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_H_
#define SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_H_

#include <sys/socket.h>

#include <array>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "base/proc_scan.h"
#include "base/sock_diag.h"
#include "base/syscalls.h"
#include "fdinject/installer.h"
#include "preload-fallback/preload_abi.h"
#include "supervisor/held_calls.h"
#include "supervisor/local_addrs.h"
#include "supervisor/pending_call.h"
#include "supervisor/switcher.h"
#include "tracer/pidfd_cache.h"
#include "tracer/probe.h"
#include "tracer/target.h"

namespace slipstream::supervisor {

struct HandlerEnv {
  const tracer::KernelFeatures& features;
  tracer::Notifier& notifier;
  fdinject::FdInstaller& installer;
  HeldCalls& held;
  LocalAddresses& local;
  Stats& stats;
  Switcher* switcher;  // nullptr: observe only, never switch
};

class SocketCalls {
 public:
  explicit SocketCalls(HandlerEnv env) : env_(env), pidfds_(env.features.pidfd_thread) {}
  void Handle(PendingCall call);

  size_t parked() const;
  // Closes parked connections whose listener is gone (the kernel would have reset them when the
  // listener closed). Called periodically while anything is parked.
  void PurgeParked(SockDiag& diag);
  // At exit: lowers the `parked` counts of connections still parked (Session::LowerAcceptGates).
  void LowerAcceptGates() {
    for (auto& [id, queue] : parked_) {
      for (Parked& conn : queue) conn.gate.Reset();
    }
  }

 private:
  struct Parked {
    UniqueFd tcp;
    UniqueFd unix_end;  // set when the connection was already paired
    // The listener port's `parked` gate, raised while the connection waits here: the program's
    // in-process accepts must come to us until it is delivered (preload_abi.h).
    matcher::AcceptGate::Count gate;
  };
  struct AcceptArgs {
    int fd;
    uint64_t addr;
    uint64_t addrlen_ptr;
    int flags;
  };

  bool CanEmulate() const { return env_.features.CanEmulate(); }
  std::optional<tracer::TargetAccess> OpenTarget(PendingCall& c);
  // pidfd_getfd through the pidfd cache, reopening once if the cached pidfd is stale (ESRCH).
  Result<UniqueFd> TakeFd(pid_t tid, int fd);
  // The process (thread group) of the thread that made the call `c`, for what the daemon lists:
  // read once per call, and across calls checked with one /proc lookup (IsThreadOf).
  pid_t ProcessOf(PendingCall& c);
  // A copy of the target's fd when it is a TCP stream socket, or an AF_UNIX end we switched (then
  // `switched` is set). nullopt means "let the kernel run it" (or the target left the call, in
  // which case `c` is abandoned). The id is checked valid after the copy was taken.
  struct Sock {
    UniqueFd fd;
    SwitchedSocket* switched = nullptr;
    // The socket whose addresses and TCP state the program must see.
    int tcp() const { return switched ? switched->tcp.Get() : fd.Get(); }
  };
  // `validate_tcp` false: the caller only lets the kernel answer (CONTINUE) if the fd is a TCP
  // socket, so the copy needs no ID_VALID check (a switched end is always checked).
  std::optional<Sock> TakeSocket(PendingCall& c, int fd, bool validate_tcp = true);
  std::optional<UniqueFd> TakeInetSocket(PendingCall& c, int fd);

  void OnSocket(PendingCall& c);
  void OnConnect(PendingCall c);
  void OnAccept(PendingCall c, bool is_accept4);
  void OnBind(PendingCall& c);
  void OnListen(PendingCall& c);
  // listen() on our copy `sock`: false when it failed (`c` is then failed, or left to the kernel
  // when the failure is the supervisor's own).
  bool ListenOnCopy(PendingCall& c, int sock, int backlog);
  // Registers the listener `sock` (the program's `fd`) with slipstreamd, then runs `then` with the
  // call and the socket, once the daemon has answered (or could not): the event loop serves other
  // calls meanwhile. `c` is moved along (the caller's is left answered).
  using ListenerThen = std::function<void(PendingCall& c, int sock)>;
  void RegisterListener(PendingCall& c, int fd, UniqueFd sock, ListenerThen then);
  void OnGetName(PendingCall& c, bool peer);
  void OnSockopt(PendingCall& c, bool get);
  void OnShutdown(PendingCall& c);
  // send/recv family in the forms the filter traps (socket_calls_data.cc).
  struct RecvJob;
  struct SendJob;
  void OnData(PendingCall c);
  void OnRecv(PendingCall c, const tracer::TargetAccess& target, UniqueFd fd, unsigned flags);
  bool StepRecv(PendingCall& c, int fd, RecvJob& job);
  void InterruptRecv(PendingCall& c, int fd, RecvJob& job, HeldCalls::End end);
  void FinishRecv(PendingCall& c, const RecvJob& job, size_t count);
  void OnSend(PendingCall c, const tracer::TargetAccess& target, Sock& sock, unsigned flags);
  bool StepSend(PendingCall& c, int fd, SendJob& job);
  void FinishSend(PendingCall& c, const SendJob& job, int err);
  // Bytes a data call moved before the program left it (see socket_calls_data.cc).
  void SaveProgress(const PendingCall& c, size_t done);
  size_t TakeProgress(const PendingCall& c);

  // accept: answers `c` unless the listener has nothing to accept yet (returns false). With a
  // connection queued and NothingToPair, the kernel runs the accept (CONTINUE), if the call was
  // just trapped or is the only accept held on the listener.
  bool NothingToPair(int listener);
  // Keeps `conn`, taken for an accept the program left, for the next accept on the listener.
  void Park(const FileId& listener_id, Parked conn);
  // Retries the accepts held on the listener (HeldCalls::Wake): a connection was parked for it,
  // or its last claim ended.
  void WakeHeldAccepts(const FileId& listener_id);
  // `first_try`: the call was just trapped (not a held accept woken).
  bool TryAccept(PendingCall& c, int listener, const FileId& listener_id, const AcceptArgs& args,
                 bool first_try);
  void Deliver(PendingCall& c, Parked conn, const FileId& listener_id, const AcceptArgs& args);
  // getsockopt(fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_CLAIM) from the preload library: it accepted
  // `fd` in-process while a switch to its port was in flight. Answers 1 in the option when the
  // connection was switched (its AF_UNIX end now in `fd`), 0 when it stays TCP.
  void OnLateClaim(PendingCall& c);
  // getsockopt(fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES) from the preload library: both
  // addresses of a switched socket's retained TCP socket at once (preload_abi.h).
  void OnNames(PendingCall& c, const tracer::TargetAccess& target);
  // If the accepted TCP socket `conn` was paired (`end`, from ClaimFromThisHost), answers the
  // late claim `c` with its AF_UNIX end at a new fd of the program (ADDFD SEND); false if it is
  // not paired or could not be installed (`c` is then unanswered, unless the target left it).
  bool SwitchAccepted(PendingCall& c, int conn, std::optional<UniqueFd> end);
  // The connect `c` came from the preload library, which takes its end by ADDFD SEND.
  bool AnswersBySend(const PendingCall& c) const;
  // Puts `end` over the program's fd of `c` (ADDFD SETFD) if that fd still names the socket
  // with inode `sock_ino`.
  bool InstallOverFd(PendingCall& c, uint64_t sock_ino, int end);
  // Answers the switched connect `c` with `end` at a new fd (ADDFD SEND), `in_progress` giving
  // EINPROGRESS, and the connection's `names` for the library to keep (preload_abi.h); falls back
  // to InstallOverFd if the program has no free fd.
  void AnswerWithEnd(PendingCall& c, uint64_t sock_ino, int end, uint64_t end_ino,
                     const slipstream_names& names, bool in_progress);
  // Runs `then` with the call and the AF_UNIX end paired with the accepted TCP socket `conn`
  // whose peer address is `peer`, if a supervised client on this host (any network namespace with
  // supervisors) made it: at once, or when slipstreamd answers the claim. `c` is moved into the
  // claim (the caller's is left answered); `conn` is read only before this returns, and must be
  // kept open by `then`'s captures if `then` uses it.
  using ClaimThen = std::function<void(PendingCall& c, std::optional<UniqueFd> end)>;
  void ClaimFromThisHost(PendingCall& c, int conn, const Result<SockAddr>& peer, ClaimThen then);
  // connect on our copy: answers `c` unless the handshake is still running on a blocking socket.
  // A connection that gets established is switched to AF_UNIX if it was `approved`, or if a
  // supervised listener appeared since the decision.
  // `switching` is the destination port's raised gate, handed on with a switched connection.
  // What a switch needs that the handshake does not change, gathered once before it.
  struct SwitchPrep {
    bool ready = false;
    uint64_t sock_ino = 0;
    bool shared = false;         // another fd names the socket: it stays TCP
    bool by_send = false;        // the end is installed by the answer (AnswersBySend)
    std::vector<int> epoll_fds;  // with by_send: the caller's epoll instances holding the socket
    UniqueFd end;                // the program's end of a new pair (none: stays TCP)
    UniqueFd server_end;
    uint64_t end_ino = 0;
    linger linger_opt{};  // the socket's SO_LINGER, copied to `end` with its other options
  };
  bool TryConnect(PendingCall& c, int sock, const SockAddr& dest, bool approved,
                  matcher::AcceptGate::Count& switching, SwitchPrep& prep);
  // Fills `prep` for our copy `sock` of the program's socket, before its connect().
  void PrepareSwitch(PendingCall& c, int sock, bool nonblocking, SwitchPrep& prep);
  // Does any other fd of the caller or its descendants name the socket with inode `ino`? (Then
  // it must stay TCP.) With `epoll_fds`, also lists the caller's epoll instances.
  bool HasOtherFds(PendingCall& c, int sock, uint64_t ino, std::vector<int>* epoll_fds = nullptr);
  // Announces the switch of the connected `sock` and puts `prep`'s end in the program, answering
  // the call if it came from the library; false if it could not (the connection stays TCP).
  bool SwitchConnected(PendingCall& c, int sock, SwitchPrep& prep, bool in_progress,
                       matcher::AcceptGate::Count& switching);
  // connect() on a socket that is already switched: answered as TCP would answer it.
  void ConnectSwitched(PendingCall& c, const SockAddr& dest, Sock& sock);
  void EmulateSockopt(PendingCall& c, int tcp, bool get);
  // shutdown(SHUT_RD) of the switched end `old_end`: installs a new end over the program's fd and
  // relays (Switcher::ReadShut); returns our copy of the new end, or nullopt if it could not.
  // `write_shut`: the program shut the write side before.
  std::optional<UniqueFd> ShutReadSwitched(PendingCall& c, int old_end, bool write_shut);
  // setsockopt(SO_LINGER) on a switched socket also applies to the retained TCP socket.
  // SO_LINGER {1, 0} set before the switch (on the socket, or inherited from the listener) arms
  // the reset of a newly installed end as a later setsockopt would.
  void ArmResetIfAbortive(int end, uint64_t end_ino, const linger& value);
  void MirrorLinger(PendingCall& c, const tracer::TargetAccess& target);
  // bind() to a fixed port: the retained TCP sockets of closed switched ends go first
  // (Switcher::ReleaseClosed).
  void ReleaseBeforeBind(PendingCall& c, const tracer::TargetAccess& target);

  HandlerEnv env_;
  tracer::PidfdCache pidfds_;
  ProcFilesCache proc_files_;  // for HasOtherFds' scans of the connecting processes
  // Connections accepted for a call the target left before the answer (a signal, EMFILE): they go
  // to the next accept on the same listener, as they would have stayed in the kernel's queue.
  std::map<FileId, std::deque<Parked>> parked_;
  // Claims out (sent to slipstreamd, not yet answered) for connections taken from each listener.
  std::map<FileId, int> claims_out_;
  // TCP sockets whose emulated connect() completed but whose answer was lost (a signal): as in
  // the kernel, the restarted connect() reports the completed connection once.
  std::set<uint64_t> unreported_connects_;
  static constexpr size_t kMaxRememberedThreads = 4096;
  std::unordered_map<pid_t, pid_t> process_of_;  // tid -> process, checked at each use
  struct Progress {
    int nr;
    std::array<uint64_t, 6> args;
    size_t done;
  };
  std::unordered_map<pid_t, Progress> progress_;  // by thread
};

// Errors that describe the supervisor's own limits, not the target's call: never hand them to the
// program; let the kernel run the call instead.
bool IsSupervisorResourceError(int err);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_H_

// Switcher: the supervisor's side of the switch to AF_UNIX (docs/design.md, "The switch").
//
// - Listeners of supervised programs are registered with slipstreamd (proof: the fd itself).
// - A connect() to a local address is first approved by the daemon (every listener that can take
//   it is supervised), then run on the supervisor's copy; once established, the program's fd is
//   replaced by one end of a socketpair and the other end is handed to the daemon, while the
//   supervisor keeps a copy until the daemon reports it claimed (kRelease) or unclaimed (kRelay).
// - An accepted connection is offered to the daemon (kClaim); if it pairs, the program gets the
//   AF_UNIX end instead of the TCP socket.
// - The supervisor retains every switched connection's TCP socket to answer getpeername & co., and
//   releases it once the program has closed its AF_UNIX end (sock_diag sweep).
#ifndef SLIPSTREAM_SUPERVISOR_SWITCHER_H_
#define SLIPSTREAM_SUPERVISOR_SWITCHER_H_

#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/sock_diag.h"
#include "base/sockaddr.h"
#include "base/sweep_timer.h"
#include "matcher/listener_table.h"
#include "matcher/policy.h"
#include "supervisor/matcher_client.h"
#include "supervisor/stats.h"

namespace slipstream::supervisor {

// A connection the supervisor switched; keyed by the inode of the AF_UNIX end in the program.
struct SwitchedSocket {
  UniqueFd tcp;  // the retained TCP socket: addresses and TCP-level options come from here
  // The program's connect() was answered EINPROGRESS: like TCP, its next connect() reports the
  // completed connection (0), later ones EISCONN.
  bool connect_unreported = false;
  // The peer end is known to be in a program (always true on the server side; on the client side
  // once the daemon reported it claimed). Until then the TCP connection may still be needed for a
  // relay, and nothing but the relay may shut it down.
  bool confirmed = false;
  // Shutdowns the program made before `confirmed` (bit 1: SHUT_RD, bit 2: SHUT_WR), to mirror on
  // `tcp` once it is.
  unsigned deferred_shutdown = 0;
  // The program shut the read side: its end is relayed (StartReadShutRelay), done once.
  bool read_shut = false;
  bool write_shut = false;  // the program called shutdown(SHUT_WR or SHUT_RDWR)
  uint16_t local_port = 0;  // of `tcp`, once ReleaseClosed asked (0: not yet)
  bool abortive = false;    // SO_LINGER {1, 0}: releasing `tcp` frees its port at once
  // An out-of-band byte waits in the program's end so that its close resets the peer (ArmReset).
  bool reset_armed = false;
  // The end is an AF_UNIX socket of another network namespace (made by a client's supervisor
  // there): our sock_diag cannot see it, and the daemon says when it is closed (kEndClosed).
  bool foreign = false;
  // The peer's close has been given to the TCP connection (SettlePeerClose), or cannot be.
  bool peer_settled = false;
};

class Switcher {
 public:
  Switcher(boost::asio::io_context& io, Stats& stats);
  ~Switcher();

  // Connects to (or starts) slipstreamd. Without it nothing is switched.
  void Start();
  bool active() const { return client_.connected(); }
  // Handles what the daemon has already sent (verdicts, pushes) without waiting.
  void Refresh() { client_.Poll(); }

  // A listening socket of a supervised program: register it, and remember where it lives so a
  // restarted daemon can be told again. `tgid`/`target_fd` name it in the program. `registered`
  // runs once the daemon has answered (it has then set the port in the listener table and told
  // every supervisor), or has failed to; at once without a daemon.
  void OnListener(
      pid_t tgid, int target_fd, int listener, std::function<void()> registered = [] {});
  // Listeners inherited from outside supervision are registered at their first accept().
  bool KnowsListener(uint64_t ino) const { return listeners_.count(ino) != 0; }

  // Client side. Approve decides from the kernel's listeners (sock_diag) and the daemon's list of
  // supervised ones, and announces the connect (kIntent) when it answers kSupervised; Abort
  // withdraws it when the connect failed or is not switched after all. kNoListener (nothing
  // listens on the port while supervised listeners exist) means "ask again if it connects": a
  // supervised server registers its listener just before its listen() runs.
  // `pid` gives the caller's process, read only if an intent is sent (it costs a /proc lookup).
  using PidOf = std::function<pid_t()>;
  matcher::QueryReason Approve(const PidOf& pid, int sock, const SockAddr& dest);
  // The same for a destination that is not local in our network namespace (docs/design.md,
  // "Across network namespaces"): kSupervised when a supervised listener of another namespace
  // could take it and the daemon can pair it by sequence numbers; otherwise kOtherNamespace, and
  // `why` says what was missing.
  matcher::QueryReason ApproveCross(const PidOf& pid, int sock, const SockAddr& dest,
                                    std::string* why);
  // Will the connection of the socket with inode `sock_ino` be paired by sequence numbers
  // (announced so in its kIntent)? Then the reason, for the trace; else nullptr.
  const std::string* BySeq(uint64_t sock_ino) const;
  // Could a client of another namespace, under a supervisor, be at `peer`? Then an accepted
  // connection from it is claimed although it is not local.
  bool FromOtherNetns(const SockAddr& peer) const;
  void Abort(pid_t pid, int sock);
  // The connect succeeded and the client end of a new pair is in the program, or is about to be
  // (`commit_follows`: an answer by ADDFD SEND, which must come after this so that a supervisor
  // killed in between leaves no end whose peer nobody has; Committed() follows it): hands the
  // server end to the daemon and keeps a copy until the daemon says who has it. `switching` is
  // the port's raised gate (BeginSwitch), kept until the daemon says who has the server end.
  void ClientSwitched(pid_t pid, int sock, uint64_t sock_ino, UniqueFd server_end,
                      uint64_t client_end_ino, matcher::AcceptGate::Count switching,
                      bool commit_follows);
  // The connect announced with `commit_follows` has been answered (kCommitted): until then the
  // daemon hands the server end to nobody, and if we die first, the server keeps TCP unless the
  // program got the end.
  void Committed(pid_t pid, uint64_t client_end_ino);
  // Raises the `switching` gate of `port` (the destination's) before a connect that may be
  // switched runs, so that a program accepting in-process offers the connection to its
  // supervisor (preload_abi.h); lowered when the returned count is dropped.
  matcher::AcceptGate::Count BeginSwitch(uint16_t port) {
    return gate_.Raise(matcher::AcceptGate::Kind::kSwitching, port);
  }
  matcher::AcceptGate& gate() { return gate_; }
  // At exit: lowers the `switching` counts of switches still awaiting a verdict, and those of
  // ends pushed to us.
  void LowerAcceptGates();

  // Server side: `done` gets the AF_UNIX end to install instead of `accepted` (whose peer is
  // `remote`), if it is paired: pushed to us ahead of the accept (no round trip, `done` runs
  // before Claim returns), or claimed from the daemon (`done` runs when it answers, the event loop
  // serving other calls meanwhile), as matcher::DecideAccept decides; `why` is the fact that
  // decided, for --trace. `pid` is read only for a claim. `accepted` is read only before Claim
  // returns. Installed() reports the end placed.
  using ClaimDone = std::function<void(std::optional<UniqueFd> end, const char* why)>;
  void Claim(const PidOf& pid, int accepted, const SockAddr& remote, bool peer_on_this_host,
             ClaimDone done);
  void Installed(pid_t pid, uint64_t end_ino, int tcp);
  // A claimed or pushed end that will never be installed (the connection was lost before the
  // program got it): closed, and the daemon told, so the client's supervisor relays or ends it.
  void Disown(UniqueFd end);

  // Records a switched connection once its end is installed in the program.
  void Book(uint64_t end_ino, UniqueFd tcp, bool client, bool connect_unreported = false);
  // The switched connection behind an AF_UNIX end, or nullptr.
  SwitchedSocket* Find(uint64_t end_ino);
  // Find for the AF_UNIX socket `end`, or else ask the daemon: an end can reach our program from a
  // program of another supervisor (SCM_RIGHTS). Only a socketpair end (no name on either side)
  // can be one; answers for inodes the daemon does not know are remembered.
  SwitchedSocket* FindOrAdopt(int end);
  // shutdown(SHUT_RD): the program's fd now holds `new_end`, whose peer is `inner`; `outer` is the
  // program's former end (`old_ino`). The booking follows the new end, and a relay gives the
  // program TCP's read side (StartReadShutRelay) with the bytes that had arrived (`unread`).
  void ReadShut(uint64_t old_ino, uint64_t new_ino, UniqueFd inner, UniqueFd outer,
                std::string unread);
  // SO_LINGER {1, 0} on the switched end `end`: makes its close give the peer ECONNRESET, as
  // TCP's reset would. AF_UNIX resets the peer only when the closing end has unread data
  // (unix_release_sock), so one out-of-band byte (Linux 5.15+, CONFIG_AF_UNIX_OOB) is sent into
  // `end` from the peer's end, taken for a moment from the process that holds it. Ordinary reads
  // skip an out-of-band byte; it shows as POLLPRI and in SIOCINQ until the close
  // (docs/differences.md). Not done when `end` has SO_OOBINLINE (the byte would be read as data)
  // or an owner for SIGURG. Returns whether the byte is in place.
  bool ArmReset(int end);
  // Before the state of `sw`'s TCP connection is read for its program (getpeername, TCP-level
  // options): if the peer has hung up on the AF_UNIX end `end`, slipstreamd gives the peer's
  // retained TCP socket the RST or FIN its program's close would have sent (kPeerGone), so that
  // `sw.tcp` shows what TCP shows after it (ENOTCONN, CLOSE, CLOSE_WAIT). One daemon round trip,
  // once per connection; nothing while the peer is there.
  void SettlePeerClose(int end, SwitchedSocket& sw);
  // Before a bind() to `port`: releases at once the retained TCP sockets bound to it whose
  // program has closed its end since the last sweep (here and in the daemon), so that a port an
  // abortive close (SO_LINGER {1, 0}) freed over TCP is free here too.
  void ReleaseClosed(uint16_t port);
  // Forgets a switched connection (the program got its TCP socket back); returns that socket.
  UniqueFd Unbook(uint64_t end_ino);
  size_t booked() const { return book_.size(); }

 private:
  struct Awaiting {
    UniqueFd server_end;  // our copy, until the daemon says who has it
    UniqueFd tcp;         // for the relay
    uint64_t client_end_ino = 0;
    matcher::AcceptGate::Count switching;  // lowered with the entry
    uint64_t daemon_epoch = 0;             // daemon_epoch_ when it was handed over
  };
  struct KnownListener {
    pid_t tgid;
    int fd;
  };

  void OnPush(matcher::Message& push);
  void OnNetns(const matcher::Message& m);
  // kIntent for a connect to `port`; when we cannot raise that port's `switching` gate ourselves,
  // asks the daemon to, and waits (briefly) until it has.
  bool SendIntent(pid_t pid, int sock, uint16_t port, bool by_seq, std::string why = {});
  // The TCP listeners on `port` in our namespace (sock_diag), cached (listener_cache_).
  std::optional<std::vector<TcpSocketInfo>> ListenersOn(uint16_t port);
  std::optional<UniqueFd> TakeFromInbox(const SockAddr& local, const SockAddr& remote);
  // kClaim's answer for the accepted socket whose addresses are `local` and `remote`: its end,
  // or our inbox's after a push.
  std::optional<UniqueFd> ClaimAnswered(Result<matcher::Message> reply, const SockAddr& local,
                                        const SockAddr& remote);
  void ScheduleInboxSweep();
  void SweepInbox();
  void OnRelease(uint64_t server_end_ino);
  void OnRelay(uint64_t server_end_ino);
  void OnLost();
  void OnReconnected();
  // After the daemon is lost: who holds each end still awaiting a verdict? A program (claimed:
  // drop our copy), nobody (relay), or only another supervisor (look again later).
  void ScheduleOrphanLook();
  void ResolveOrphans();
  // The inode of the server-side TCP socket of the connection whose client TCP socket is
  // `client_tcp` (sock_diag); 0 if there is none.
  uint64_t ServerSideInode(int client_tcp);
  // Which of the server-side TCP sockets `inodes` a supervisor retains (their end was installed):
  // we do (Book), or only Slipstream's processes hold them. One pass over /proc for them all.
  std::unordered_set<uint64_t> RetainedServerSides(std::span<const uint64_t> inodes);
  void ScheduleSweep();
  void Sweep();

  boost::asio::io_context& io_;
  Stats& stats_;
  MatcherClient client_;
  std::optional<SockDiag> diag_;
  std::unordered_map<uint64_t, SwitchedSocket> book_;  // by the program's AF_UNIX end inode
  std::unordered_set<uint64_t> not_switched_;          // AF_UNIX inodes the daemon did not know
  // MatcherClient::received() when a kAdopt last went unanswered: no kAdopt until it moves.
  std::optional<uint64_t> adopt_unanswered_at_;
  matcher::AcceptGate gate_;  // before awaiting_, whose counts it must outlive
  std::unordered_map<uint64_t, Awaiting> awaiting_;    // by server end inode
  std::map<uint64_t, KnownListener> listeners_;        // by listener inode (ours)
  std::unordered_set<uint64_t> supervised_listeners_;  // every supervisor's (from the daemon)
  // Across network namespaces (from the daemon): ours, the daemon's, whether it can read sequence
  // numbers in ours, the other namespaces and their supervised listeners.
  uint64_t netns_ = 0;
  uint64_t daemon_netns_ = 0;
  bool seq_evidence_ = false;
  // Said once per supervisor: a supervised listener in another namespace that the daemon cannot
  // pair with (no CAP_NET_ADMIN), which a user who supervised both sides did not expect.
  bool warned_no_evidence_ = false;
  std::map<uint64_t, matcher::NetnsView> namespaces_;
  std::map<uint64_t, matcher::RemoteListenerView> remote_listeners_;  // by inode
  // Client sockets announced as paired by sequence numbers (by inode), with the reason.
  std::unordered_map<uint64_t, std::string> seq_intents_;
  std::unordered_set<uint64_t> foreign_ends_;  // claimed ends of another namespace, until Book
  // sock_diag listener dumps by port, reused for a second and dropped whenever the daemon reports a
  // change. A stale entry can only make us switch a connection that an unsupervised listener then
  // takes, which the relay covers; it saves two netlink dumps per connect.
  struct CachedListeners {
    std::vector<TcpSocketInfo> listeners;
    std::chrono::steady_clock::time_point when;
  };
  std::unordered_map<uint16_t, CachedListeners> listener_cache_;
  struct InboxEntry {
    UniqueFd server_end;
    std::optional<std::chrono::steady_clock::time_point> accepted_since;
    // The local port's `switching` gate, raised while the end waits here: the client's raise
    // may be gone before our program accepts (its supervisor exited, or released the switch to
    // us when the daemon died), and an in-process accept must still offer the connection to us,
    // or the end, with what the client wrote into it, would be lost.
    matcher::AcceptGate::Count switching;
  };
  using InboxKey = std::pair<std::string, std::string>;  // (local, remote), canonical text
  std::map<InboxKey, InboxEntry> inbox_;
  // A claim sent to the daemon because the inbox missed, until it is answered. The server end is
  // usually already on its way: the client's kConnected and our kClaim cross in the daemon, which
  // pushes the end and then answers "pushed to you". The push answers the claim at once, a
  // wake-up of this process and a daemon message earlier; the daemon's answer is then dropped.
  struct ClaimWait {
    ClaimDone done;  // empty once answered
    const char* why;
  };
  std::map<InboxKey, std::shared_ptr<ClaimWait>> claims_out_;
  // Answers posted by OnPush that are still queued when we are destroyed see it expired.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  SweepTimer inbox_timer_;
  SweepTimer sweep_timer_;
  boost::asio::steady_timer orphan_timer_;
  uint64_t relays_active_ = 0;
  // Connections to a daemon lost so far: ResolveOrphans looks only at the ends handed over to a
  // daemon that is gone, never at those of the next one.
  uint64_t daemon_epoch_ = 0;
  // Ports of abortive connections released by the periodic sweep, which the daemon may still
  // hold for up to its own sweep period: a bind() to one asks the daemon to sweep (kSweep).
  std::unordered_map<uint16_t, std::chrono::steady_clock::time_point> released_ports_;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_SWITCHER_H_

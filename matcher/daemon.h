// slipstreamd: the per-user matcher. Supervisors register the listening sockets of their programs
// and hand over connected sockets; the daemon pairs the two local ends of a connection by kernel
// identity — (network namespace, mirrored 4-tuple) of live sockets, or, across network namespaces,
// their TCP sequence numbers (daemon_netns.cc) — and passes the server's end of the AF_UNIX
// socketpair to the supervisor that accepted the connection.
//
// Threading: one thread, one io_context.
#ifndef SLIPSTREAM_MATCHER_DAEMON_H_
#define SLIPSTREAM_MATCHER_DAEMON_H_

#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/sock_diag.h"
#include "base/sweep_timer.h"
#include "base/syscalls.h"
#include "matcher/endpoint.h"
#include "matcher/listener_table.h"
#include "matcher/protocol.h"

namespace slipstream::matcher {

// Version of the object slipstreamd --status --json prints (docs/stats-schema.md): a field's
// meaning never changes within a version; fields may be added.
inline constexpr int kStatusSchema = 1;

struct DaemonConfig {
  std::string dir;                             // runtime directory (socket, lock)
  std::chrono::seconds idle_exit{30};          // leave after this long without supervisors
  std::chrono::milliseconds claim_grace{250};  // accepted but unclaimed -> relay
  std::chrono::milliseconds deferred_claim_limit{2000};
  int ready_fd = -1;  // written to once listening
  // Serve the supervisors of every uid (slipstreamd --all-users): matcher.sock 0666 and
  // listeners.table 0644 instead of 0600. Otherwise a session of another uid gets a kError
  // naming the cause and is closed.
  bool all_users = false;
  // A listening socket bound at SocketPath(dir) by systemd (socket activation,
  // matcher/socket_activation.h): used instead of binding one, and its file is left in place at
  // exit (systemd owns it). -1: bind our own.
  int listen_fd = -1;
};

class Daemon {
 public:
  // Takes the lock (EWOULDBLOCK: another daemon runs), replaces a stale socket, binds, listens
  // (or takes config.listen_fd).
  static Result<std::unique_ptr<Daemon>> Create(DaemonConfig config);
  ~Daemon();
  void Run();
  // Thread-safe: makes Run() return (tests run the daemon in a thread).
  void Stop();

 private:
  struct Session;
  struct Pending;
  struct Live;
  Daemon(DaemonConfig config, UniqueFd lock, UniqueFd listen_fd, uint64_t sock_ino, SockDiag diag);

  void ArmAccept();
  void OnAccept();
  // Whether a supervisor of `uid` may have a session; if not, tells it why (kError EACCES) before
  // the caller closes the connection.
  bool Admit(int fd, uid_t uid);
  void ArmRead(Session* s);
  // Reads and handles the messages queued on `s`, at most `budget` of them, so that a session
  // that sends as fast as the daemon reads cannot keep it from the others.
  enum class ReadResult { kEmpty, kBudgetSpent, kClosed };
  ReadResult Read(Session* s, int budget);
  void ReadOnWakeUp(uint64_t session_id);
  void Close(Session* s);
  void Handle(Session* s, Message m);

  void OnRegisterListener(Session* s, Message& m);
  void OnIntent(Session* s, Message& m);
  void OnConnected(Session* s, Message& m);
  void OnAbort(Session* s, Message& m);
  void OnClaim(Session* s, Message& m);
  void OnInstalled(Session* s, Message& m);
  void OnDisown(Session* s, Message& m);
  void OnAdopt(Session* s, Message& m);
  void OnPeerPid(Session* s, Message& m);
  // A survivor's supervisor saw its end's peer hang up (daemon_peer_gone.cc).
  void OnPeerGone(Session* s, Message& m);
  // Gate ledgers (daemon_ledger.cc): a closing session's ledger is drained once its supervisor
  // has exited, kept meanwhile in case it reconnects and sends it again.
  void OnGateLedger(Session* s, Message& m);
  // Commits (daemon_pairing.cc): the end of a committed pair goes to a waiting claim, else is
  // pushed to `push_to` (0: nobody).
  void OnCommitted(Session* s, Message& m);
  void OfferPending(std::map<ConnKey, Pending>::iterator it, uint64_t push_to);
  // The pairs a dead client's supervisor announced and never committed: committed if its program
  // holds the end, else forgotten (the server keeps TCP, as the client did).
  void SettleUncommitted(Session* s);
  void ReleaseLedger(Session* s);
  void DrainOrphanOnExit(const FileId& id, UniqueFd pidfd);
  void OnStatus(Session* s, Message& m);

  // Across network namespaces (daemon_netns.cc; docs/design.md, "Across network namespaces").
  void OnHello(Session* s, Message& m);
  void SendNetns(Session* to, uint64_t cookie, bool present);
  void BroadcastNetns(uint64_t cookie, bool present);
  void SendRemoteListener(Session* to, uint64_t ino, bool added);
  void BroadcastRemoteListener(uint64_t ino, bool added);
  // A listener as other namespaces see it (any listener: ours too), listed for the supervisors of
  // every namespace; whether the daemon can read sequence numbers there is in kNetns.
  void RegisterRemoteListener(Session* s, Message& m, uint64_t netns);
  void ForgetNetnsOf(Session* s);
  // Forgets namespaces that have no supervisor and no pair any more.
  void PruneNetns();
  void OnConnectedBySeq(Session* s, Message& m, uint64_t client_end_ino);
  // A claim that no 4-tuple answered: by sequence numbers. Returns true when it was answered or
  // deferred.
  bool ClaimBySeq(Session* s, Message& m, int tcp);
  bool AnySeqCandidates() const;
  bool AnySeqIntents(uint64_t except_session) const;
  // Claims keyed by sequence numbers wait while some client may still announce their pair; once
  // no such client is connecting, the rest are answered "no".
  void AnswerSeqClaimsIfNoIntents();
  // Should an unclaimed pending pair keyed by sequence numbers be relayed? Looks for its server
  // side in every namespace whose sock_diag socket we hold.
  bool ShouldRelayBySeq(Pending& p, std::chrono::steady_clock::time_point now);
  void RetireRemoteListeners(std::chrono::steady_clock::time_point now);
  void PublishTable();
  void ReplyError(Session* s, const Message& m, int err, const char* text);
  // Never blocks: what the socket cannot take now is queued and flushed when it can. A daemon that
  // waited on one supervisor could deadlock with it (each waiting for the other to read).
  Status Send(Session* to, MsgType type, uint64_t seq, int32_t pid, std::span<const uint8_t> body,
              std::span<const int> fds = {});
  void Flush(Session* s);
  void SendListener(Session* to, uint64_t ino, bool added);
  void Broadcast(uint64_t ino, bool added);
  // Hands the server end of `it` to `to`: as a kClaimReply to request `seq`, or, with seq 0, as an
  // unsolicited kPush. From then on `to` decides: kInstalled or kDisown.
  bool HandOver(Session* to, uint64_t seq, std::map<ConnKey, Pending>::iterator it);
  // Tells the client's supervisor what became of its pair, and forgets the pair.
  void Resolve(std::map<ConnKey, Pending>::iterator it, bool claimed);
  std::map<ConnKey, Pending>::iterator FindByEnd(uint64_t server_end_ino);
  // The one place a claim is answered without an end (kNo, kPushedToYou); HandOver sends ends.
  void AnswerClaim(Session* to, uint64_t seq, int32_t pid, ClaimResult result);
  Session* Alive(uint64_t session);
  // Reads every message already queued on any session (a kConnected may be behind a kClaim).
  void DrainAll();

  void ScheduleSweep();
  void ScheduleLiveSweep();
  void Sweep();
  void SweepLive();
  // The sock_diag socket that sees AF_UNIX sockets of network namespace `netns` (0: ours), or
  // nullptr when no supervisor there handed us one.
  SockDiag* UnixDiagOf(uint64_t netns);
  // The 2 s sweep: live pairs, then listeners that no longer listen; whether to sweep again.
  bool SweepLiveAndListeners();
  void RetireListeners(std::chrono::steady_clock::time_point now);
  void ScheduleIdleCheck();
  bool Idle() const;

  // `pid` as the session may learn it: 0 unless the pid's process belongs to the session's user,
  // when it is neither ours nor root (--all-users).
  int32_t ShownPid(uint64_t asking_session, int32_t pid) const;
  // Lists at most `max_listed` listeners and connections (the totals are always exact).
  std::string StatusJson(uint64_t asking_session, size_t max_listed) const;

  DaemonConfig config_;
  boost::asio::io_context io_;
  UniqueFd lock_;
  boost::asio::posix::stream_descriptor listener_;
  uint64_t sock_ino_;
  uint64_t netns_;
  uint64_t netns_cookie_ = 0;  // SO_NETNS_COOKIE of our own namespace
  SockDiag diag_;
  SweepTimer sweep_timer_;       // pairs in flight: every 100 ms
  SweepTimer live_sweep_timer_;  // live pairs and listeners: every 2 s
  boost::asio::steady_timer idle_timer_;
  boost::asio::steady_timer accept_retry_timer_;
  bool draining_ = false;
  std::chrono::steady_clock::time_point last_activity_;

  uint64_t next_session_ = 1;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  struct ListenerReg {
    uint64_t session;
    SockAddr addr;
    int32_t pid;
    std::chrono::steady_clock::time_point since;
  };
  std::map<uint64_t, ListenerReg> listeners_;  // by listener inode
  // Network namespaces with supervisors, by cookie: the sock_diag socket their first supervisor
  // gave us (kHello), their addresses (reported), and whether we may read sequence numbers there.
  struct NetnsEntry {
    std::optional<SockDiag> diag;
    std::vector<SockAddr> addrs;
    bool seq_evidence = false;
    int sessions = 0;
  };
  std::map<uint64_t, NetnsEntry> netns_table_;
  struct RemoteListenerReg {
    uint64_t session;
    SockAddr addr;
    int32_t pid;
    uint64_t netns;
    bool v6only;
    std::chrono::steady_clock::time_point since;
  };
  // Every listener reachable from other namespaces (also those of our own namespace, which are in
  // listeners_ as well), by inode.
  std::map<uint64_t, RemoteListenerReg> remote_listeners_;
  // listeners_'s ports, for the preload library; republished with every change (Broadcast).
  std::optional<ListenerTable> table_;
  // Raises the `switching` gate of each pending pair's port (Pending::switching); before
  // pending_, whose counts it must outlive.
  std::optional<AcceptGate> gate_;
  struct Intent {
    uint64_t session;
    std::chrono::steady_clock::time_point when;
    // To be paired by sequence numbers. Its socket is not read then: the program still holds it,
    // and a write racing with repair mode would be misplaced (tcp_sendmsg_locked).
    bool by_seq = false;
    // Raised for a supervisor that cannot write the table (IntentBody::raise_gate).
    AcceptGate::Count switching;
  };
  std::map<uint64_t, Intent> intents_;  // by client TCP socket inode
  std::map<ConnKey, Pending> pending_;  // by the server side's (local, remote)
  struct Deferred {
    uint64_t session;
    uint64_t seq;
    int32_t pid;
    ConnKey key;
    std::chrono::steady_clock::time_point since;
    // Claims keyed by sequence numbers: the claimed socket's inode and namespace.
    uint64_t claimed_ino = 0;
    uint64_t claimed_netns = 0;
  };
  std::vector<Deferred> deferred_;
  // Answers the deferred claim `d` "no" (if its supervisor is still there) and forgets it;
  // returns the next one.
  std::vector<Deferred>::iterator RefuseDeferred(std::vector<Deferred>::iterator d);
  std::map<uint64_t, Live> live_;  // switched connections, by server end inode
  // The ledgers of sessions that closed while their supervisor lived (a queue overflow, a send
  // that timed out, a supervisor that reconnects), by the memfd's identity: drained when the
  // supervisor's pidfd says it exited, or taken over by its next session.
  struct OrphanLedger {
    GateLedger ledger;
    std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch;  // owns the pidfd
  };
  std::map<FileId, OrphanLedger> orphan_ledgers_;
  uint64_t pairs_total_ = 0;
  uint64_t relays_total_ = 0;
  uint64_t claims_total_ = 0;  // kClaim messages received (--status)
};

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_DAEMON_H_

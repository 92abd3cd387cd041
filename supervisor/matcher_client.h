// MatcherClient: the supervisor's connection to the user's slipstreamd.
//
// Requests on the notification path are asynchronous (CallAsync): the event loop goes on serving
// other trapped calls while the daemon answers, so a stopped or busy daemon delays only the calls
// that wait for it. The few synchronous ones (Call) wait with a bound. A request that times out,
// or a daemon that dies, only stops new pairings: the caller falls back to plain TCP. Unsolicited
// messages (kRelease, kRelay, kPush) are dispatched to callbacks in the order they arrive, also
// while a synchronous request waits for its reply.
#ifndef SLIPSTREAM_SUPERVISOR_MATCHER_CLIENT_H_
#define SLIPSTREAM_SUPERVISOR_MATCHER_CLIENT_H_

#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "base/result.h"
#include "base/sweep_timer.h"
#include "base/unique_fd.h"
#include "matcher/protocol.h"

namespace slipstream::supervisor {

class MatcherClient {
 public:
  struct Callbacks {
    std::function<void(uint64_t server_end_ino)> on_release;
    std::function<void(uint64_t server_end_ino)> on_relay;
    std::function<void()> on_lost;       // the daemon went away
    std::function<void()> on_connected;  // (re)connected: re-register listeners
    std::function<void(uint64_t ino, bool added)> on_listener;  // the supervised listeners
    std::function<void(matcher::Message& push)> on_push;        // a server end for our accept()
    // Across network namespaces: kHelloReply, kNetns, kRemoteListener and kEndClosed.
    std::function<void(const matcher::Message& m)> on_netns;
  };

  MatcherClient(boost::asio::io_context& io, Callbacks callbacks);
  ~MatcherClient();

  // Connects to the daemon of this user, starting `slipstreamd` when none runs (never in a
  // system-wide daemon's directory: matcher::DirTrust). Blocking; for start-up. Later reconnects
  // happen in the background. A daemon that serves only its own user refuses us with a kError
  // (EACCES), which is reported once, naming the cause and the fix.
  Status Connect(bool spawn);
  bool connected() const { return desc_ != nullptr; }
  // The runtime directory is a system-wide daemon's (root's): we may not write there.
  bool system_wide() const { return system_wide_; }
  // A refusal or a missing system-wide daemon was reported, with its cause and fix.
  bool reported() const { return warned_refused_ || warned_missing_; }
  // After a failed Connect(): tries again in the background (every second, as after a lost
  // session), e.g. for a system-wide daemon its administrator has yet to start.
  void KeepTrying() {
    if (!desc_) ScheduleReconnect();
  }

  // Sends and waits for the answer, blocking the event loop for at most `timeout_ms`: for start-up
  // (kHello) and for rare calls that pass a short bound (kAdopt 200 ms; kPeerPid and kSweep, whose
  // answer is only a hint, 50 ms), so a stopped daemon cannot stall every trapped call of the
  // tree. A late answer is dispatched like any message.
  static constexpr int kDefaultCallTimeoutMs = 3000;
  Result<matcher::Message> Call(matcher::MsgType type, int32_t pid, std::span<const uint8_t> body,
                                std::span<const int> fds = {},
                                int timeout_ms = kDefaultCallTimeoutMs);
  // Sends and returns without waiting. `done` runs exactly once, posted to the event loop (never
  // before CallAsync returns, never inside another handler): with the answer (a kPush the daemon
  // queued before the answer has been dispatched by then); with ETIMEDOUT when none came within
  // `timeout_ms` (checked every kCallSweepPeriod; a late answer is then dispatched like any
  // message); with the send's error, or ECONNRESET when the connection breaks first. (Not at all
  // if the client or the io_context is destroyed first: `done` is then destroyed unrun.)
  using Done = std::function<void(Result<matcher::Message>)>;
  void CallAsync(matcher::MsgType type, int32_t pid, std::span<const uint8_t> body,
                 std::span<const int> fds, Done done, int timeout_ms = kDefaultCallTimeoutMs);
  static constexpr auto kCallSweepPeriod = std::chrono::milliseconds(100);
  Status Send(matcher::MsgType type, int32_t pid, std::span<const uint8_t> body,
              std::span<const int> fds = {});
  // How many messages have been read from the daemon (answers included): a caller that got no
  // answer in time can tell whether the daemon has spoken since.
  uint64_t received() const { return received_; }
  // The uid of the daemon we connected to last (SO_PEERCRED).
  uid_t daemon_uid() const { return daemon_uid_; }
  // Handles every message already queued (without waiting): the freshest view of the listeners.
  // Returns how many there were.
  size_t Poll();
  // Gives back an end that will never be installed: closes our copy first, then tells the daemon
  // (kDisown), after which the client's supervisor may relay.
  void Disown(UniqueFd end);

 private:
  Status SpawnDaemon();
  void ArmRead();
  void OnReadable();
  void Dispatch(matcher::Message m);
  void Lost(const SysError& why);
  // A daemon that refuses our uid says so (kError EACCES, seq 0) before it closes the session.
  static bool IsRefusal(const matcher::Message& m);
  void NoteRefusal(const matcher::Message& m);
  // Reads what the daemon left queued before it closed the session, looking for its refusal.
  void ReadLastWords();
  void ScheduleReconnect();
  bool ExpireCalls();
  void FailCalls(const SysError& why);
  void Answer(Done done, Result<matcher::Message> answer);
  void ReportLate(matcher::MsgType type);

  struct AsyncCall {
    std::chrono::steady_clock::time_point deadline;
    matcher::MsgType type;
    Done done;
  };

  boost::asio::io_context& io_;
  Callbacks callbacks_;
  std::string dir_;
  bool system_wide_ = false;     // dir_ is root's (matcher::DirTrust::kSystemWide): never spawn
  uid_t daemon_uid_ = 0;         // SO_PEERCRED of the daemon we connected to last
  bool refused_ = false;         // that daemon serves only its own user
  bool warned_refused_ = false;  // reported once per run
  bool warned_missing_ = false;  // no system-wide daemon: reported once per run
  std::unique_ptr<boost::asio::posix::stream_descriptor> desc_;
  boost::asio::steady_timer reconnect_timer_;
  int reconnect_failures_ = 0;
  uint64_t seq_ = 0;
  std::unordered_map<uint64_t, AsyncCall> calls_;  // by seq: requests awaiting their answer
  SweepTimer call_timer_;
  uint64_t received_ = 0;
  uint64_t late_answers_ = 0;  // calls that timed out: only the first is a warning
  // Answers already posted when we are destroyed see it expired and are dropped unrun.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

// slipstreamd next to slipstream-trace (installed, or in the build tree), else from PATH.
std::string FindDaemonBinary();

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_MATCHER_CLIENT_H_

#include "supervisor/held_calls.h"

#include <dirent.h>

#include <cstdlib>
#include <string>

#include "base/syscalls.h"

namespace slipstream::supervisor {
namespace asio = boost::asio;

namespace {

constexpr int kErestartSys = 512;  // ERESTARTSYS, kernel-internal (include/linux/errno.h)
constexpr auto kSweepPeriod = std::chrono::milliseconds(10);

uint64_t HexField(const std::string& text, const char* key) {
  auto pos = text.find(key);
  if (pos == std::string::npos) return 0;
  return std::strtoull(text.c_str() + pos + std::char_traits<char>::length(key), nullptr, 16);
}

long DecField(const std::string& text, const char* key) {
  auto pos = text.find(key);
  if (pos == std::string::npos) return 0;
  return std::strtol(text.c_str() + pos + std::char_traits<char>::length(key), nullptr, 10);
}

// Does every thread of `tgid` other than `tid` block all of `signals`?
bool OthersBlock(pid_t tgid, pid_t tid, uint64_t signals) {
  std::string dir = "/proc/" + std::to_string(tgid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  bool all_block = true;
  while (dirent* e = readdir(d)) {
    pid_t other = static_cast<pid_t>(std::atoi(e->d_name));
    if (other <= 0 || other == tid) continue;
    auto text = ReadSmallFile((dir + "/" + e->d_name + "/status").c_str());
    if (!text) continue;  // exited meanwhile
    if ((HexField(*text, "\nSigBlk:") & signals) != signals) {
      all_block = false;
      break;
    }
  }
  closedir(d);
  return all_block;
}

}  // namespace

bool SignalPendingFor(pid_t tid) {
  auto text = ReadSmallFile(("/proc/" + std::to_string(tid) + "/status").c_str());
  if (!text) return false;
  uint64_t blocked = HexField(*text, "\nSigBlk:");
  if (HexField(*text, "\nSigPnd:") & ~blocked) return true;
  uint64_t shared = HexField(*text, "\nShdPnd:") & ~blocked;
  if (shared == 0) return false;
  if (DecField(*text, "\nThreads:") <= 1) return true;
  // The kernel wakes one thread that does not block the signal; if another could take it, it
  // will, exactly as it would while our thread sat in a native blocking call.
  return OthersBlock(static_cast<pid_t>(DecField(*text, "\nTgid:")), tid, shared);
}

struct HeldCalls::Entry {
  Entry(asio::io_context& io, PendingCall c, int fd, Wait w, Retry r)
      : call(std::move(c)), desc(io, fd), wait(w), retry(std::move(r)) {}
  PendingCall call;
  asio::posix::stream_descriptor desc;
  Wait wait;
  Retry retry;
  std::list<std::unique_ptr<Entry>>::iterator self;
};

HeldCalls::HeldCalls(asio::io_context& io, tracer::Notifier& notifier, bool killable)
    : io_(io), notifier_(notifier), killable_(killable), sweep_timer_(io) {}

HeldCalls::~HeldCalls() = default;

void HeldCalls::Hold(PendingCall call, UniqueFd fd, Wait wait, Retry retry) {
  auto entry = std::make_unique<Entry>(io_, std::move(call), fd.Release(), wait, std::move(retry));
  Entry* raw = entry.get();
  held_.push_front(std::move(entry));
  raw->self = held_.begin();
  Arm(raw);
  ScheduleSweep();
}

void HeldCalls::Arm(Entry* entry) {
  auto wait = entry->wait == Wait::kRead ? asio::posix::descriptor_base::wait_read
                                         : asio::posix::descriptor_base::wait_write;
  entry->desc.async_wait(wait, [this, entry](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;  // dropped by the sweep
    if (entry->retry(entry->call, entry->desc.native_handle())) {
      Drop(entry);
    } else {
      Arm(entry);
    }
  });
}

void HeldCalls::Drop(Entry* entry) {
  boost::system::error_code ignored;
  entry->desc.cancel(ignored);
  // Closing through asio deregisters the fd from its epoll set first: the file lives on in the
  // target, and epoll forgets an item only when the file's last reference goes.
  entry->desc.close(ignored);
  auto owned = std::move(*entry->self);
  held_.erase(entry->self);
  // A pending async_wait still refers to `entry`; free it after that handler ran (aborted).
  asio::post(io_, [owned = std::shared_ptr<Entry>(std::move(owned))] {});
}

void HeldCalls::ScheduleSweep() {
  if (sweep_scheduled_ || held_.empty()) return;
  sweep_scheduled_ = true;
  sweep_timer_.expires_after(kSweepPeriod);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    sweep_scheduled_ = false;
    if (!ec) Sweep();
    ScheduleSweep();
  });
}

void HeldCalls::Sweep() {
  for (auto it = held_.begin(); it != held_.end();) {
    Entry* entry = (it++)->get();
    PendingCall& call = entry->call;
    if (!notifier_.IdValid(call.id())) {
      call.Abandon();
      Drop(entry);
    } else if (killable_ && SignalPendingFor(call.tid())) {
      call.Fail(kErestartSys);
      Drop(entry);
    }
  }
}

}  // namespace slipstream::supervisor

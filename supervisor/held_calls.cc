#include "supervisor/held_calls.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "base/syscalls.h"

namespace slipstream::supervisor {
namespace asio = boost::asio;

namespace {

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
  Entry(PendingCall c, UniqueFd f, Wait w, Retry r, Interrupt i, std::optional<FileId> k)
      : call(std::move(c)),
        fd(std::move(f)),
        wait(w),
        retry(std::move(r)),
        interrupt(std::move(i)),
        key(k) {}
  PendingCall call;
  UniqueFd fd;
  Wait wait;
  Retry retry;
  Interrupt interrupt;
  std::optional<FileId> key;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::multimap<pid_t, std::unique_ptr<Entry>>::iterator self;
  std::multimap<FileId, Entry*>::iterator keyed;  // valid only with `key`
};

namespace {

// The socket's own timeout for this wait, as the kernel applies it to a blocking call: accept()
// waits at most SO_RCVTIMEO, connect() at most SO_SNDTIMEO (0 = forever).
std::optional<std::chrono::steady_clock::time_point> DeadlineOf(int fd, HeldCalls::Wait wait) {
  timeval tv{};
  socklen_t len = sizeof(tv);
  int name = wait == HeldCalls::Wait::kWrite ? SO_SNDTIMEO : SO_RCVTIMEO;
  if (getsockopt(fd, SOL_SOCKET, name, &tv, &len) < 0 || (tv.tv_sec == 0 && tv.tv_usec == 0)) {
    return std::nullopt;
  }
  return std::chrono::steady_clock::now() + std::chrono::seconds(tv.tv_sec) +
         std::chrono::microseconds(tv.tv_usec);
}

}  // namespace

HeldCalls::HeldCalls(asio::io_context& io, tracer::Notifier& notifier, bool killable)
    : io_(io),
      notifier_(notifier),
      killable_(killable),
      waits_fd_(epoll_create1(EPOLL_CLOEXEC)),
      waits_(io, fcntl(waits_fd_.Get(), F_DUPFD_CLOEXEC, 0)),
      sweep_timer_(io, kSweepPeriod, [this] {
        Sweep();
        return !held_.empty();
      }) {
  ArmWaits();
}

HeldCalls::~HeldCalls() = default;

void HeldCalls::DropAll() {
  // Deregistered one by one (as Drop does): a file that lives on elsewhere (the program's fd
  // passed to another process) would keep its epoll item, and with it a pointer to a freed entry.
  for (auto& [tid, entry] : held_)
    epoll_ctl(waits_fd_.Get(), EPOLL_CTL_DEL, entry->fd.Get(), nullptr);
  keyed_.clear();
  held_.clear();
}

uint32_t HeldCalls::EventsOf(Wait wait) {
  switch (wait) {
    case Wait::kRead:
      return EPOLLIN | EPOLLONESHOT;
    case Wait::kWrite:
      return EPOLLOUT | EPOLLONESHOT;
    case Wait::kReadMore:
      // Edge-triggered and never re-armed: every arrival of data (or EOF) wakes it once. Adding
      // it reports data already queued, so nothing that arrived before the hold is missed.
      return EPOLLIN | EPOLLRDHUP | EPOLLET;
  }
  return 0;
}

void HeldCalls::Hold(PendingCall call, UniqueFd fd, Wait wait, Retry retry, Interrupt interrupt,
                     std::optional<FileId> key) {
  auto entry = std::make_unique<Entry>(std::move(call), std::move(fd), wait, std::move(retry),
                                       std::move(interrupt), key);
  Entry* raw = entry.get();
  raw->deadline = DeadlineOf(raw->fd.Get(), wait);
  raw->self = held_.emplace(raw->call.tid(), std::move(entry));
  if (key) raw->keyed = keyed_.emplace(*key, raw);
  epoll_event ev{};
  ev.events = EventsOf(wait);
  ev.data.ptr = raw;
  if (epoll_ctl(waits_fd_.Get(), EPOLL_CTL_ADD, raw->fd.Get(), &ev) < 0) {
    // Cannot watch it: let the kernel run the call (CONTINUE) rather than hold it blind.
    raw->call.Continue();
    return Drop(raw);
  }
  ScheduleSweep();
}

void HeldCalls::Arm(Entry* entry) {
  if (entry->wait == Wait::kReadMore) return;  // edge-triggered: stays armed
  epoll_event ev{};
  ev.events = EventsOf(entry->wait);
  ev.data.ptr = entry;
  epoll_ctl(waits_fd_.Get(), EPOLL_CTL_MOD, entry->fd.Get(), &ev);
}

void HeldCalls::ArmWaits() {
  waits_.async_wait(asio::posix::descriptor_base::wait_read,
                    [this](const boost::system::error_code& ec) {
                      if (ec) return;
                      OnWaitsReady();
                      ArmWaits();
                    });
}

void HeldCalls::OnWaitsReady() {
  epoll_event events[64];
  int n = epoll_wait(waits_fd_.Get(), events, 64, 0);
  for (int i = 0; i < n; ++i) {
    auto* entry = static_cast<Entry*>(events[i].data.ptr);
    // One-shot: each entry reports at most once per arming, so it cannot have been dropped by an
    // earlier event of this batch.
    if (entry->retry(entry->call, entry->fd.Get())) {
      Drop(entry);
    } else {
      Arm(entry);
    }
  }
}

int HeldCalls::HeldWith(const FileId& key) const { return static_cast<int>(keyed_.count(key)); }

void HeldCalls::Wake(const FileId& key) {
  asio::post(io_, [this, key] {
    // Listed first, oldest first (the order the kernel wakes blocked accepts in): the list is
    // fixed before any retry runs (retries neither hold nor drop other calls: held_calls.h).
    std::vector<Entry*> woken;
    auto [first, last] = keyed_.equal_range(key);
    for (auto it = first; it != last; ++it) woken.push_back(it->second);
    for (Entry* entry : woken) {
      if (entry->retry(entry->call, entry->fd.Get())) Drop(entry);
    }
  });
}

void HeldCalls::Drop(Entry* entry) {
  // Deregister before closing: the file lives on in the program, and epoll forgets an item only
  // when the file's last reference goes.
  epoll_ctl(waits_fd_.Get(), EPOLL_CTL_DEL, entry->fd.Get(), nullptr);
  if (entry->key) keyed_.erase(entry->keyed);
  held_.erase(entry->self);  // destroys `entry`
}

void HeldCalls::ScheduleSweep() {
  if (!held_.empty()) sweep_timer_.Arm();
}

void HeldCalls::ThreadMovedOn(pid_t tid) {
  auto [it, last] = held_.equal_range(tid);
  while (it != last) {
    Entry* entry = (it++)->second.get();
    if (notifier_.IdValid(entry->call.id())) continue;
    if (entry->interrupt) entry->interrupt(entry->call, entry->fd.Get(), End::kWithdrawn);
    entry->call.Abandon();
    Drop(entry);
  }
}

void HeldCalls::Sweep() {
  for (auto it = held_.begin(); it != held_.end();) {
    Entry* entry = (it++)->second.get();
    PendingCall& call = entry->call;
    if (!notifier_.IdValid(call.id())) {
      if (entry->interrupt) entry->interrupt(call, entry->fd.Get(), End::kWithdrawn);
      call.Abandon();
      Drop(entry);
    } else if (killable_ && SignalPendingFor(call.tid())) {
      if (entry->interrupt) {
        entry->interrupt(call, entry->fd.Get(), End::kSignal);
      } else {
        call.Fail(kErestartSys);
      }
      Drop(entry);
    } else if (entry->deadline && std::chrono::steady_clock::now() >= *entry->deadline) {
      // What the kernel answers when the socket's timeout expires: accept EAGAIN, connect
      // EINPROGRESS (the handshake goes on).
      if (entry->interrupt) {
        entry->interrupt(call, entry->fd.Get(), End::kTimeout);
      } else {
        call.Fail(entry->wait == Wait::kWrite ? EINPROGRESS : EAGAIN);
      }
      Drop(entry);
    }
  }
}

}  // namespace slipstream::supervisor

#include "supervisor/preload.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/sockaddr.h"
#include "base/unique_fd.h"
#include "supervisor/trace_log.h"
#include "tracer/calls.h"

namespace slipstream::supervisor {

uint64_t NewCookie() {
  uint64_t cookie = 0;
  while (cookie == 0) {
    if (getrandom(&cookie, sizeof(cookie), 0) != static_cast<ssize_t>(sizeof(cookie))) return 0;
  }
  return cookie;
}

std::string FindPreloadLibrary() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return {};
  std::string dir(self, static_cast<size_t>(n));
  dir = dir.substr(0, dir.rfind('/'));
  const std::string name = SLIPSTREAM_PRELOAD_LIBRARY;
  for (const std::string& candidate : {dir + "/" + name, dir + "/../lib/slipstream/" + name,
                                       dir + "/../preload-fallback/" + name}) {
    if (access(candidate.c_str(), R_OK) != 0) continue;
    char real[PATH_MAX];
    if (realpath(candidate.c_str(), real) == nullptr) continue;
    // LD_PRELOAD splits at spaces and colons.
    if (std::strpbrk(real, " :\t") != nullptr) return {};
    return real;
  }
  return {};
}

namespace {

std::string ArgsText(const slipstream_trace_record& r) {
  auto call = static_cast<tracer::Call>(r.call);
  int a0 = static_cast<int>(r.args[0]), a1 = static_cast<int>(r.args[1]);
  std::string fd = std::to_string(r.fd);
  switch (call) {
    case tracer::Call::kSocket:
      return std::string(FamilyName(a0)) + ", " + SocketTypeText(a1) + ", " +
             std::to_string(r.args[2]);
    case tracer::Call::kConnect:
    case tracer::Call::kBind:
      return fd + ", " +
             (r.addr_len > 0 ? SockAddr(r.addr, r.addr_len).ToString() : std::string("?"));
    case tracer::Call::kGetsockopt:
    case tracer::Call::kSetsockopt:
      return fd + ", " + SockoptText(a0, a1);
    case tracer::Call::kShutdown:
      return fd + ", " + ShutdownHowText(a0);
    case tracer::Call::kAccept4:
      return fd + ", " + AcceptFlagsText(a0);  // as the supervisor's own line shows it
    default:
      return fd;
  }
}

bool HasName(const char* entry, const char* name) {
  size_t n = strlen(name);
  return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

// Whether the LD_PRELOAD list `list` names `library` already.
bool Lists(const std::string& list, const std::string& library) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find_first_of(" :", start);
    if (end == std::string::npos) end = list.size();
    if (list.compare(start, end - start, library) == 0) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

std::vector<std::string> PreloadEnvironment(char** environ, const PreloadEnv& p) {
  std::vector<std::string> env;
  std::string preload = p.library;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (HasName(*e, SLIPSTREAM_ENV_COOKIE) || HasName(*e, SLIPSTREAM_ENV_TABLE) ||
        HasName(*e, SLIPSTREAM_ENV_STATS)) {
      continue;
    }
    if (HasName(*e, "LD_PRELOAD")) {
      // The user's libraries come first: one that interposes connect (torsocks, proxychains)
      // must see the program's calls, and reaches ours as its "next" connect. Ours first would
      // serve the call in-process and the user's library would never see it.
      std::string user = *e + strlen("LD_PRELOAD=");
      if (Lists(user, p.library)) {
        preload = user;
      } else if (!user.empty()) {
        preload = user + ":" + p.library;
      }
      continue;
    }
    env.emplace_back(*e);
  }
  env.push_back("LD_PRELOAD=" + preload);
  char cookie[17];
  snprintf(cookie, sizeof(cookie), "%016" PRIx64, p.cookie);
  env.push_back(std::string(SLIPSTREAM_ENV_COOKIE) + "=" + cookie);
  if (!p.table.empty()) env.push_back(std::string(SLIPSTREAM_ENV_TABLE) + "=" + p.table);
  if (!p.stats.empty()) env.push_back(std::string(SLIPSTREAM_ENV_STATS) + "=" + p.stats);
  return env;
}

Result<PreloadCounters> PreloadCounters::Create(const std::string& dir) {
  std::string path = dir + "/preload-stats." + std::to_string(getpid());
  unlink(path.c_str());  // a predecessor with our pid died without removing it
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Errno("open(preload stats)");
  if (ftruncate(fd.Get(), sizeof(slipstream_preload_stats)) < 0) {
    unlink(path.c_str());
    return Errno("ftruncate(preload stats)");
  }
  void* m = mmap(nullptr, sizeof(slipstream_preload_stats), PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd.Get(), 0);
  if (m == MAP_FAILED) {
    unlink(path.c_str());
    return Errno("mmap(preload stats)");
  }
  auto* stats = static_cast<slipstream_preload_stats*>(m);
  __atomic_store_n(&stats->magic, SLIPSTREAM_STATS_MAGIC, __ATOMIC_RELEASE);
  return PreloadCounters(std::move(path), stats);
}

PreloadCounters::PreloadCounters(PreloadCounters&& other) noexcept
    : path_(std::move(other.path_)), stats_(other.stats_) {
  other.stats_ = nullptr;
}

PreloadCounters::~PreloadCounters() {
  if (stats_ == nullptr) return;
  munmap(stats_, sizeof(*stats_));
  unlink(path_.c_str());
}

std::string PreloadCounters::TraceLines() const {
  std::string out;
  uint64_t claimed = __atomic_load_n(&stats_->trace_next, __ATOMIC_ACQUIRE);
  uint64_t kept = claimed < SLIPSTREAM_TRACE_SLOTS ? claimed : SLIPSTREAM_TRACE_SLOTS;
  for (uint64_t i = 0; i < kept; ++i) {
    const slipstream_trace_record& r = stats_->trace_ring[i];
    // A record still being written belonged to a process that died in the middle of it.
    if (__atomic_load_n(&r.seq, __ATOMIC_ACQUIRE) != i + 1) continue;
    if (r.call < 0 || r.call >= tracer::kCallCount) continue;
    TraceRecord t;
    t.when = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(r.time_ns)));
    t.call = static_cast<tracer::Call>(r.call);
    t.tid = r.tid;
    t.args = ArgsText(r);
    if (r.result < 0) {
      t.outcome = TraceRecord::Outcome::kError;
      t.err = r.err;
    } else {
      t.outcome = TraceRecord::Outcome::kValue;
      t.value = r.result;
    }
    t.note = "(in-process)";
    out += "preload: " + TraceLog::Format(t) + "\n";
  }
  if (claimed > kept) {
    out += "preload: " + std::to_string(claimed - kept) +
           " later calls served in-process are not listed (only counted)\n";
  }
  return out;
}

std::string PreloadCounters::Format() const {
  auto load = [](const uint64_t& v) {
    return static_cast<unsigned long long>(__atomic_load_n(&v, __ATOMIC_RELAXED));
  };
  std::string in_process, passed;
  unsigned long long total_in = 0, total_passed = 0;
  char item[64];
  for (int i = 0; i < tracer::kCallCount; ++i) {
    const char* name = tracer::CallName(static_cast<tracer::Call>(i));
    if (auto n = load(stats_->in_process[i]); n != 0) {
      total_in += n;
      snprintf(item, sizeof(item), " %s %llu", name, n);
      in_process += item;
    }
    if (auto n = load(stats_->to_supervisor[i]); n != 0) {
      total_passed += n;
      snprintf(item, sizeof(item), " %s %llu", name, n);
      passed += item;
    }
  }
  char line[160];
  snprintf(line, sizeof(line),
           "slipstream-trace: served in-process (preload) %llu, no notification:", total_in);
  std::string out = line + in_process + "\n";
  snprintf(line, sizeof(line),
           "slipstream-trace: left to the supervisor by the preload %llu:", total_passed);
  out += line + passed + "\n";
  snprintf(line, sizeof(line),
           "slipstream-trace: connections left on TCP in-process (preload) %llu (connect %llu, "
           "accept %llu)\n",
           load(stats_->tcp_connects) + load(stats_->tcp_accepts), load(stats_->tcp_connects),
           load(stats_->tcp_accepts));
  out += line;
  snprintf(line, sizeof(line),
           "slipstream-trace: accepts offered to the supervisor by the preload %llu: switched "
           "%llu\n",
           load(stats_->claims), load(stats_->claims_switched));
  out += line;
  return out;
}

PreloadTotals PreloadCounters::Totals() const {
  auto load = [](const uint64_t& v) { return __atomic_load_n(&v, __ATOMIC_RELAXED); };
  PreloadTotals t;
  for (int i = 0; i < tracer::kCallCount; ++i) {
    t.in_process[i] = load(stats_->in_process[i]);
    t.to_supervisor[i] = load(stats_->to_supervisor[i]);
  }
  t.tcp_connects = load(stats_->tcp_connects);
  t.tcp_accepts = load(stats_->tcp_accepts);
  t.claims = load(stats_->claims);
  t.claims_switched = load(stats_->claims_switched);
  return t;
}

}  // namespace slipstream::supervisor

// slipstream-trace: runs a program under the Slipstream supervisor.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "matcher/listener_table.h"
#include "matcher/paths.h"
#include "supervisor/blocking_guard.h"
#include "supervisor/launcher.h"
#include "supervisor/options.h"
#include "supervisor/preload.h"
#include "supervisor/session.h"
#include "supervisor/shepherd.h"
#include "tracer/filter.h"
#include "tracer/probe.h"

namespace slipstream::supervisor {
namespace {

// Signals slipstream-trace passes on to the program when someone sends them to it directly.
constexpr int kForwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

void SetUpLogging(bool verbose) {
  auto logger = spdlog::stderr_logger_st("slipstream-trace");
  logger->set_pattern("slipstream-trace: %l: %v");
  logger->set_level(spdlog::level::warn);
  if (const char* env = getenv("SLIPSTREAM_LOG")) logger->set_level(spdlog::level::from_str(env));
  if (verbose) logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
}

[[noreturn]] void ExecUnsupervised(const Options& o) {
  std::vector<char*> argv;
  for (const auto& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  int err = errno;
  fprintf(stderr, "slipstream-trace: %s: %s\n", argv[0], strerror(err));
  exit(ExitCodeForExecError(err));
}

// Reproduces the program's end: its exit code, or death by the same signal.
[[noreturn]] void ExitLike(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);  // the program already dumped core if it was going to
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);
    raise(sig);
  }
  exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

FILE* OpenOutput(const Options& o) {
  if (o.output.empty()) return stderr;
  FILE* f = fopen(o.output.c_str(), "we");
  if (f == nullptr) {
    fprintf(stderr, "slipstream-trace: cannot open %s: %s\n", o.output.c_str(), strerror(errno));
    exit(2);
  }
  return f;
}

// Hybrid mode: the library, its cookie (also in the filter) and the program's environment. Nothing
// when --no-preload, the kernel cannot emulate (observing only) or the library is not found.
struct Hybrid {
  uint64_t cookie = 0;
  std::vector<std::string> env;
  std::optional<PreloadCounters> counters;
};

// In a system-wide daemon's directory, hybrid mode needs the table writable: through it this
// supervisor raises the accept gates that keep the program's in-process accept() from taking a
// connection that is being switched or parked (preload_abi.h). The table is root's and 0644, so
// only root's supervisors use hybrid mode there; the others trap every socket call.
bool CanWriteTable(const std::string& dir) {
  std::string table = matcher::ListenerTablePath(dir);
  if (access(table.c_str(), W_OK) == 0) return true;
  spdlog::debug("hybrid mode off: {} is not writable by this user (a system-wide daemon's)", table);
  return false;
}

Hybrid SetUpHybrid(const Options& o, const tracer::KernelFeatures& features) {
  Hybrid h;
  if (!o.preload || !features.CanEmulate()) return h;
  PreloadEnv p;
  p.library = FindPreloadLibrary();
  if (p.library.empty()) {
    spdlog::warn(
        "{} not found next to slipstream-trace: every socket call goes through the "
        "supervisor",
        SLIPSTREAM_PRELOAD_LIBRARY);
    return h;
  }
  p.cookie = NewCookie();
  if (p.cookie == 0) return h;
  auto found = matcher::FindRuntimeDir();
  auto dir = found.map([](const matcher::RuntimeDirInfo& info) { return info.dir; });
  bool system_wide = found && found->trust == matcher::DirTrust::kSystemWide;
  if (dir && system_wide && o.switching && !CanWriteTable(*dir)) return h;
  if (dir) {
    if (o.switching) {
      p.table = matcher::ListenerTablePath(*dir);
      // Before the program starts, so that it maps the table at once (ListenerTable::Provide).
      // A system-wide daemon made it when it started; we create nothing in its directory.
      auto made = system_wide ? Status() : matcher::ListenerTable::Provide(p.table);
      if (!made) spdlog::debug("listener table {}: {}", p.table, made.error().ToString());
    }
    if ((o.stats || o.trace) && !system_wide) {
      auto counters = PreloadCounters::Create(*dir);
      if (counters) {
        if (o.trace) counters->EnableTrace();
        p.stats = counters->path();
        h.counters.emplace(std::move(*counters));
      }
    }
  } else if (o.switching) {
    // Without the table the library cannot tell supervised ports: it would let every connect
    // run in-process and nothing would be switched.
    spdlog::warn("no runtime directory ({}): hybrid mode off", dir.error().ToString());
    return h;
  }
  h.cookie = p.cookie;
  h.env = PreloadEnvironment(environ, p);
  spdlog::debug("hybrid mode: {} preloaded", p.library);
  return h;
}

// Names what keeps the supervisor from acting on calls, each cause with its fix (a cause that
// refuses two calls, e.g. Docker's default seccomp profile, is named once).
void WarnIfObservingOnly(const tracer::KernelFeatures& features) {
  if (features.CanEmulate()) return;
  constexpr const char* kConsequence = "so socket calls are only observed and nothing is switched";
  auto pidfd = features.WhyNoPidfdGetfd();
  if (pidfd) spdlog::warn("pidfd_getfd is unavailable, {}: {}", kConsequence, pidfd->Text());
  if (auto vm = features.WhyNoProcessVm(); vm && !(pidfd && pidfd->cause == vm->cause)) {
    spdlog::warn("process_vm_readv/writev are unavailable, {}: {}", kConsequence, vm->Text());
  }
  if (!features.addfd || !features.addfd_send) {
    spdlog::warn("kernel {} lacks {} (Linux {}+), {}", features.release,
                 features.addfd ? "SECCOMP_ADDFD_FLAG_SEND" : "SECCOMP_IOCTL_NOTIF_ADDFD",
                 features.addfd ? "5.14" : "5.9", kConsequence);
  }
}

UniqueFd BlockSignalsIntoFd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (int sig : kForwarded) sigaddset(&set, sig);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  return UniqueFd(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
}

int Main(int argc, char** argv) {
  int exit_code = 0;
  auto options = ParseOptions(argc, argv, &exit_code);
  if (!options) return exit_code;
  const Options& o = *options;
  SetUpLogging(o.verbose);

  tracer::KernelFeatures features = tracer::ProbeKernel();
  spdlog::debug("{}", features.Describe());
  if (auto why = features.WhyNoUserNotif()) {
    spdlog::warn("no seccomp user notification here ({}): running {} unsupervised", why->Text(),
                 o.command[0]);
    ExecUnsupervised(o);
  }
  WarnIfObservingOnly(features);
  tracer::FilterOptions filter_options;
  filter_options.allow_io_uring = o.allow_io_uring;
  filter_options.trap_socket = o.trace || o.stats;
  // When switching, bind() is trapped too: a port held by the retained TCP socket of a switched
  // connection the program closed must be free again when TCP would have freed it.
  filter_options.trap_bind = o.trace || o.stats || o.switching;
  Hybrid hybrid = SetUpHybrid(o, features);
  filter_options.bypass_cookie = hybrid.cookie;
  // Without switching no socket answers unlike TCP: the data-path calls need not stop.
  filter_options.trap_data_flags = o.switching && features.CanEmulate();
  auto program = tracer::BuildFilter(filter_options);
  if (!program) {
    spdlog::warn("cannot build the seccomp filter ({}): running {} unsupervised",
                 program.error().ToString(), o.command[0]);
    hybrid.counters.reset();  // removes the counters file: exec does not unwind
    ExecUnsupervised(o);
  }
  bool killable = o.wait_killable && features.wait_killable;
  FILE* out = OpenOutput(o);

  InheritedSignals inherited = InheritedSignals::Capture();
  InheritedLimits limits = InheritedLimits::CaptureAndRaise();
  BlockingGuard::InstallHandler();
  // A relay writing into an end the program has closed must get EPIPE, not kill us. (The program
  // gets back the disposition it was started with.)
  signal(SIGPIPE, SIG_IGN);
  UniqueFd signal_fd = BlockSignalsIntoFd();
  // Orphaned descendants are reparented to us: we reap them, and they stay our descendants.
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  unsigned flags = killable ? static_cast<unsigned>(SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) : 0u;
  // The program stays in our process group: job control (Ctrl-Z, fg, background reads) works
  // unchanged, and a group kill (kill -9 -PGID) still ends it. The price: a signal sent to the
  // whole group reaches the program directly and once more through us (docs/design.md).
  auto outstanding = OutstandingTable::Create();
  if (!outstanding) {
    spdlog::error("{}", outstanding.error().ToString());
    return 126;
  }
  // The shepherd starts before the program runs: killed between the two, we would leave it with
  // no holder of the notification fd, and every trapped call would fail with ENOSYS (found by the
  // chaos soak, tests/soak: kill -9 of slipstream-trace just after it started a client).
  Result<ShepherdHandle> shepherd = Error(ESRCH, "not started");
  LaunchSpec spec{o.command,
                  &*program,
                  flags,
                  &inherited,
                  &limits,
                  hybrid.cookie != 0 ? &hybrid.env : nullptr,
                  [&](int notify_fd) { shepherd = StartShepherd(notify_fd, *outstanding); }};
  auto launched = Launch(spec);
  if (!launched) {
    if (shepherd) StopShepherd(*shepherd);  // nothing of the program runs: it leaves at once
    const SysError& e = launched.error();
    if (std::strcmp(e.op, "execvp") == 0) {
      fprintf(stderr, "slipstream-trace: %s: %s\n", o.command[0].c_str(), strerror(e.err));
      return ExitCodeForExecError(e.err);
    }
    fprintf(stderr, "slipstream-trace: cannot start %s: %s\n", o.command[0].c_str(),
            e.ToString().c_str());
    return 126;
  }

  if (!shepherd) spdlog::warn("no shepherd ({}): not fail-open", shepherd.error().ToString());

  SessionConfig config{features, killable, o.trace ? out : nullptr, o.switching};
  Session session(std::move(config), std::move(launched->notify_fd), launched->pid,
                  std::move(signal_fd), *outstanding);
  int status = session.Run();
  session.LowerAcceptGates();
  if (shepherd) StopShepherd(*shepherd);
  if (o.stats && !o.stats_json) {
    std::string text = session.stats().Format();
    fwrite(text.data(), 1, text.size(), out);
  }
  // Calls served in-process: their --trace lines ("preload: ...", recorded by the library) and
  // their counts.
  if ((o.stats || o.trace) && hybrid.counters) {
    std::string text = (o.trace ? hybrid.counters->TraceLines() : "") +
                       (o.stats_json ? "" : hybrid.counters->Format());
    fwrite(text.data(), 1, text.size(), out);
  }
  if (o.stats_json) {  // last: one line that a reader finds at the end of the output
    std::optional<PreloadTotals> preload;
    if (hybrid.counters) preload = hybrid.counters->Totals();
    std::string json = FormatJson(session.stats(), preload ? &*preload : nullptr);
    fwrite(json.data(), 1, json.size(), out);
  }
  hybrid.counters.reset();  // ExitLike does not unwind
  fflush(out);
  ExitLike(status);
}

}  // namespace
}  // namespace slipstream::supervisor

int main(int argc, char** argv) { return slipstream::supervisor::Main(argc, argv); }

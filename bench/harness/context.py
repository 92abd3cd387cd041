"""What every workload needs: binaries, the temp dir, ports, CPU pinning and the variant rules.

Variants (the columns of every table):
  tcp          server and client plain, over TCP loopback: the baseline
  slipstream   server and client each under slipstream-trace: once the switch is active, the
               connection runs over an AF_UNIX socketpair. Dynamically linked programs run in
               hybrid mode (libslipstream-preload.so serves socket calls in-process)
  no-preload   the same with slipstream-trace --no-preload: every call through the supervisor, as
               for static programs (only workloads that list it: connrate, nginx, syscalls)
  client-only  only the client under slipstream-trace, the server plain: the connection cannot be
               switched; this is the cost Slipstream adds when the peer does not take part
  server-only  the reverse
  unix         both plain, using the program's own AF_UNIX mode: the upper bound for Slipstream
  native       (syscall benchmark only) the program run plainly, against `slipstream`
  floor        (syscall benchmark only) getsockname under ss-notify-floor, a supervisor that answers
               CONTINUE at once: the bare notification round trip a trapped call cannot go below
"""

import os
import pwd
import socket

from .procs import quote

# variant -> (which server instance, client supervised?, address family the client uses)
VARIANTS = {
    "tcp": ("plain", False, "tcp"),
    "slipstream": ("supervised", True, "tcp"),
    "no-preload": ("supervised-no-preload", True, "tcp"),
    "client-only": ("plain", True, "tcp"),
    "server-only": ("supervised", False, "tcp"),
    "unix": ("unix", False, "unix"),
}
VARIANT_ORDER = ["tcp", "slipstream", "no-preload", "client-only", "server-only", "unix", "native",
                 "floor"]

# Extra slipstream-trace options of a variant's supervised client, and of a server instance.
VARIANT_TRACE_ARGS = {"no-preload": ["--no-preload"]}
SERVER_TRACE_ARGS = {"supervised-no-preload": ["--no-preload"]}


class Context:
    def __init__(self, args, procs, results, tmp, profile):
        self.args = args
        self.procs = procs
        self.results = results
        self.tmp = tmp
        self.profile = profile  # dict of durations and sizes (quick or full)
        self.build = os.path.abspath(args.build)
        self.trace_bin = os.path.abspath(args.trace_bin or os.path.join(self.build, "supervisor", "slipstream-trace"))
        self.trace_args = list(getattr(args, "trace_arg", None) or [])
        self.bench_bin = os.path.join(self.build, "bench")
        self.stats = not args.no_trace_stats
        self._ports = set()
        self._stats_counter = 0
        ncpu = len(os.sched_getaffinity(0))
        self.pin = args.pin if ncpu >= 2 else "none"

    # ---- paths -------------------------------------------------------------------------------

    def bench_program(self, name):
        return os.path.join(self.bench_bin, name)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def free_port(self):
        """A currently free loopback TCP port, never handed out twice in one run."""
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self._ports:
                self._ports.add(port)
                return port

    # ---- users --------------------------------------------------------------------------------

    def runtime_env(self, user=None):
        """Environment that gives this run its own slipstreamd (one per user), isolated from any
        other user of the machine: SLIPSTREAM_RUNTIME_DIR is where the matcher's socket lives."""
        name = user or pwd.getpwuid(os.getuid()).pw_name
        d = self.path(f"runtime-{name}")
        if not os.path.isdir(d):
            os.mkdir(d, 0o700)
            if user:
                pw = pwd.getpwnam(user)
                os.chown(d, pw.pw_uid, pw.pw_gid)
        env = {"SLIPSTREAM_RUNTIME_DIR": d}
        if user:
            env["HOME"] = self.path()
        return env

    def start_daemon(self, name):
        """Starts the run's slipstreamd ahead of any supervisor, in the run's network namespace, as
        a system-wide daemon would be (one started on demand lives where its first supervisor
        does). It carries the run's id, so the clean-up ends it."""
        self.procs.run([os.path.join(self.build, "matcher", "slipstreamd"), "--idle-exit", "600"],
                       f"{name}-slipstreamd", 30, env=self.runtime_env())

    # ---- commands ------------------------------------------------------------------------------

    def cpu_for(self, side):
        """Server side on CPU 0, client side on CPU 1 (with --pin split): on 2 cores this keeps the
        two ends from competing for one CPU and from migrating mid-measurement."""
        if self.pin == "none" or side is None:
            return None
        return 0 if side == "server" else 1

    def command(self, argv, side, supervised, user=None, stats_name=None, trace_args=()):
        """Wraps `argv`: [taskset -c CPU] [setpriv --reuid USER ...] [slipstream-trace --] argv.
        `trace_args`: options of this run's slipstream-trace (after --trace-arg's).

        Returns (argv, stats_path or None). slipstream-trace runs as the program's user, as a user
        would run it; taskset's affinity is inherited by the supervisor and the program alike.
        With a stats_name, slipstream-trace gets --stats -o FILE. That is not free (with --stats it
        also traps socket()), so measured client runs go without it: see Workload.client."""
        pre = []
        cpu = self.cpu_for(side)
        if cpu is not None:
            pre += ["taskset", "-c", str(cpu)]
        if user and user != pwd.getpwuid(os.getuid()).pw_name:
            pre += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        stats_path = None
        if supervised:
            pre.append(self.trace_bin)
            pre += self.trace_args + list(trace_args)
            if self.stats and stats_name:
                self._stats_counter += 1
                stats_path = self.path("stats", f"{self._stats_counter:05d}-{stats_name or 'proc'}.txt")
                os.makedirs(os.path.dirname(stats_path), exist_ok=True)
                if user:
                    # The supervisor writes the file as the program's user.
                    os.chmod(os.path.dirname(stats_path), 0o1777)
                pre += ["--stats", "-o", stats_path]
            pre.append("--")
        return pre + [str(a) for a in argv], stats_path

    def describe(self, argv):
        return quote(argv)

    def log(self, msg):
        self.results.log(msg)

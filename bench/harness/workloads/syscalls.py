"""Issue 2's benchmark: lmbench-style system call costs, native vs under slipstream-trace."""

from ..workload import Server, Workload
from .common import json_lines, tcp_addr

TESTS = ["null", "open_close", "read_small", "select100", "fork_exit", "fork_exec", "connect_close",
         "getsockname_tcp"]


class Syscalls(Workload):
    name = "syscalls"
    description = ("ss-syscalls (bench/c/syscalls.c), lmbench-style: cost per call natively and under "
                   "slipstream-trace. connect_close connects to a plain listener (the connection "
                   "cannot be switched); getsockname_tcp is one trapped call per iteration (with "
                   "the preload library it is served in the program: no-preload traps it). floor: "
                   "getsockname_tcp under ss-notify-floor (bench/c/notify_floor.c), a supervisor "
                   "that answers CONTINUE at once: the bare notification round trip.")
    variants = ["native", "slipstream", "no-preload", "floor"]
    baseline = "native"

    def declare(self):
        self.ctx.results.declare_metric(self.name, "time", "ns/call", "lower", "time per call")

    def cases(self):
        return [None]

    def setup(self):
        port = self.ctx.free_port()
        self.listener = tcp_addr(port)
        prog = self.ctx.bench_program("ss-syscalls")
        self.servers = {"listener": Server(self, "listener", [prog, "listen", self.listener], False, tcp_port=port)}
        self.servers["listener"].start()
        self.workdir = self.ctx.path()

    def measure(self, case, variant, rep):
        t = self.p["syscall_time"] if rep >= 0 else 0.02
        argv = [self.ctx.bench_program("ss-syscalls"), "run", "--time", str(t), "--listener", self.listener,
                "--dir", self.workdir]
        if variant == "floor":  # it traps getsockname only: the other tests would be native runs
            argv = [self.ctx.bench_program("ss-notify-floor"), "--"] + argv + ["--tests", "getsockname_tcp"]
        out, _, _ = self.client(argv, case, variant, rep, timeout=60 + 30 * t * len(TESTS))
        return [(r["test"], "time", None, r["ns_per_op"]) for r in json_lines(out, " ".join(argv))]

"""Connection rate: socket + connect + one 64-byte echo + close, one connection at a time."""

from ..context import VARIANTS
from ..workload import Server, Workload
from .common import json_lines, tcp_addr


class ConnRate(Workload):
    name = "connrate"
    description = ("ss-connrate (bench/c/connrate.c, dynamically linked): cycles of socket + connect + "
                   "one 64-byte echo + close per second, one client, one connection at a time. "
                   "`slipstream` is hybrid mode, `no-preload` the supervisor path for every call.")
    variants = ["tcp", "slipstream", "no-preload", "client-only", "server-only", "unix"]

    def declare(self):
        r = self.ctx.results
        r.declare_metric(self.name, "rate", "conn/s", "higher", "connections per second")
        for phase in ("connect", "echo", "close"):
            r.declare_metric(self.name, f"{phase}_us", "us", "lower", f"{phase} phase")

    def setup(self):
        prog = self.ctx.bench_program("ss-connrate")
        p1, p2, p3 = self.ctx.free_port(), self.ctx.free_port(), self.ctx.free_port()
        path = self.ctx.path("connrate.sock")
        self.addr = {"plain": tcp_addr(p1), "supervised": tcp_addr(p2), "supervised-no-preload": tcp_addr(p3),
                     "unix": f"unix:{path}"}
        self.servers = {
            "plain": Server(self, "plain", [prog, "server", self.addr["plain"]], False, tcp_port=p1),
            "supervised": Server(self, "supervised", [prog, "server", self.addr["supervised"]], True, tcp_port=p2),
            "supervised-no-preload": Server(self, "supervised-no-preload",
                                            [prog, "server", self.addr["supervised-no-preload"]], True, tcp_port=p3),
            "unix": Server(self, "unix", [prog, "server", self.addr["unix"]], False, unix_path=path),
        }
        # Only start what the chosen variants use (a third supervised server is not free).
        self.servers = {k: s for k, s in self.servers.items() if k in self.used_servers()}
        for s in self.servers.values():
            s.start()

    def measure(self, case, variant, rep):
        t = self.p["connrate_time"] if rep >= 0 else 0.2
        argv = [self.ctx.bench_program("ss-connrate"), "client", self.addr[VARIANTS[variant][0]], "--time", str(t)]
        out, _, _ = self.client(argv, case, variant, rep, timeout=60 + 5 * t)
        r = json_lines(out, " ".join(argv))[0]
        return [(case, "rate", None, r["per_s"]), (case, "connect_us", None, r["connect_us"]),
                (case, "echo_us", None, r["echo_us"]), (case, "close_us", None, r["close_us"])]

"""A Go HTTP/1.1 server and keep-alive client (bench/go/httpbench, CGO_ENABLED=0)."""

from ..context import VARIANTS
from ..workload import Server, Workload
from .common import json_lines, tcp_addr


class GoHttp(Workload):
    name = "http"
    description = ("ss-http (bench/go/httpbench, static Go, stdlib net/http): GET / with a 64-byte body "
                   "over N kept-alive connections, requests per second.")

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "req/s", "higher", "requests per second")

    def cases(self):
        return [f"conns={c}" for c in self.p["http_conns"]]

    def setup(self):
        prog = self.ctx.bench_program("ss-http")
        p1, p2 = self.ctx.free_port(), self.ctx.free_port()
        path = self.ctx.path("http.sock")
        self.addr = {"plain": tcp_addr(p1), "supervised": tcp_addr(p2), "unix": f"unix:{path}"}
        # The plain server listens on TCP and on the unix socket: one process serves tcp, client-only
        # and unix, as memcached cannot but redis and PostgreSQL also do.
        plain = Server(self, "plain", [prog, "server", "-listen", self.addr["plain"], "-listen", self.addr["unix"]],
                       False, tcp_port=p1, unix_path=path)
        self.servers = {
            "plain": plain,
            "supervised": Server(self, "supervised", [prog, "server", "-listen", self.addr["supervised"]], True,
                                 tcp_port=p2),
        }
        for s in self.servers.values():
            s.start()
        self.servers["unix"] = plain

    def teardown(self):
        self.servers.pop("unix", None)
        super().teardown()

    def measure(self, case, variant, rep):
        conns = case.split("=")[1]
        t = self.p["http_time"] if rep >= 0 else 0.2
        argv = [self.ctx.bench_program("ss-http"), "client", "-target", self.addr[VARIANTS[variant][0]],
                "-conns", conns, "-time", str(t)]
        out, _, _ = self.client(argv, case, variant, rep, timeout=60 + 5 * t)
        r = json_lines(out, " ".join(argv))[0]
        return [(case, "rate", None, r["per_s"])]

"""Issue 3's benchmark: one C program (ss-sweep), ping-pong and streaming, 1 B ... 4 MiB."""

from ..context import VARIANTS
from ..workload import Server, Workload
from .common import json_lines, tcp_addr


class Sweep(Workload):
    name = "sweep"
    description = ("ss-sweep (bench/c/sweep.c): ping-pong (one-way latency, NetPIPE-style throughput) "
                   "and streaming throughput over one connection, message sizes 1 B to 4 MiB.")

    def declare(self):
        r = self.ctx.results
        r.declare_metric(self.name, "throughput", "Mbit/s", "higher")
        r.declare_metric(self.name, "latency", "us", "lower", "one-way latency")

    def cases(self):
        return ["pingpong", "stream"]

    # Where clients connect, where servers bind, and what goes before each command (the netns
    # workload runs the two sides in two network namespaces).
    server_host = None  # None: tcp_addr's loopback
    listen_host = None  # None: server_host
    server_prefix = ()
    client_prefix = ()

    def setup(self):
        prog = self.ctx.bench_program("ss-sweep")
        p1, p2 = self.ctx.free_port(), self.ctx.free_port()
        self.unix_path = self.ctx.path(f"{self.name}.sock")
        self.addr = {"plain": tcp_addr(p1, self.server_host), "supervised": tcp_addr(p2, self.server_host),
                     "unix": f"unix:{self.unix_path}"}
        bind = self.listen_host or self.server_host
        pre = self.server_prefix
        self.servers = {
            "plain": Server(self, "plain", [prog, "server", tcp_addr(p1, bind)], False, tcp_port=p1, prefix=pre),
            "supervised": Server(self, "supervised", [prog, "server", tcp_addr(p2, bind)], True, tcp_port=p2,
                                 prefix=pre),
            "unix": Server(self, "unix", [prog, "server", self.addr["unix"]], False, unix_path=self.unix_path,
                           prefix=pre),
        }
        for s in self.servers.values():
            s.start()
        self._cache = {}

    def measure(self, case, variant, rep):
        # One client run measures both modes; the "stream" case reuses the run made for
        # "pingpong" in the same repetition, so the two stay interleaved with the other variants.
        key = (variant, rep)
        if case == "stream" and key in self._cache:
            return self._cache.pop(key)
        p = self.p
        addr = self.addr[VARIANTS[variant][0]]
        argv = [self.ctx.bench_program("ss-sweep"), "client", addr, "--min", "1", "--max", str(p["sweep_max"]),
                "--factor", str(p["sweep_factor"]), "--time", str(p["sweep_time"] if rep >= 0 else 0.01)]
        sizes = 0
        s = 1
        while s <= p["sweep_max"]:
            sizes += 1
            s *= p["sweep_factor"]
        timeout = 60 + sizes * 2 * p["sweep_time"] * 8
        out, _, _ = self.client(argv, case, variant, rep, timeout, prefix=self.client_prefix)
        points = json_lines(out, " ".join(argv))
        self.ctx.results.curves[(self.name, "sweep", variant, rep)] = points
        pp = [("pingpong", "throughput", pt["size"], pt["mbps"]) for pt in points if pt["mode"] == "pingpong"]
        pp += [("pingpong", "latency", pt["size"], pt["latency_us"]) for pt in points if pt["mode"] == "pingpong"]
        st = [("stream", "throughput", pt["size"], pt["mbps"]) for pt in points if pt["mode"] == "stream"]
        self._cache[key] = st
        return pp if case == "pingpong" else self._cache.pop(key)

"""memcached, driven by our closed-loop generator ss-memcload at 1, 4, 16 and 64 connections."""

import os
import pwd

from ..context import VARIANTS
from ..workload import Server, Workload
from .common import json_lines, tcp_addr


class Memcached(Workload):
    name = "memcached"
    description = ("memcached -t 1 (one worker thread; the server is pinned to one CPU), loaded by "
                   "ss-memcload (bench/c/memcload.c): 10000 keys with 1 B - 4 KiB values, 90% get / "
                   "10% set, one request outstanding per connection; operations per second.")

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "ops/s", "higher", "operations per second")

    def cases(self):
        return [f"conns={c}" for c in self.p["memcached_conns"]]

    def setup(self):
        p1, p2 = self.ctx.free_port(), self.ctx.free_port()
        path = self.ctx.path("memcached.sock")
        self.addr = {"plain": tcp_addr(p1), "supervised": tcp_addr(p2), "unix": f"unix:{path}"}
        base = ["memcached", "-m", "1024", "-t", "1", "-c", "4096"]
        if os.getuid() == 0:
            # memcached refuses to run as root unless told which user to be; staying root keeps the
            # server and its supervisor the same user as the clients.
            base += ["-u", pwd.getpwuid(0).pw_name]
        # memcached -s disables TCP, so the unix variant needs its own instance.
        self.servers = {
            "plain": Server(self, "plain", base + ["-U", "0", "-l", "127.0.0.1", "-p", str(p1)], False, tcp_port=p1),
            "supervised": Server(self, "supervised", base + ["-U", "0", "-l", "127.0.0.1", "-p", str(p2)], True,
                                 tcp_port=p2),
            "unix": Server(self, "unix", base + ["-s", path, "-a", "0700"], False, unix_path=path),
        }
        for key, s in self.servers.items():
            s.start()
            # Store every key once (plain client) so gets hit from the first measurement on.
            self.client([self.ctx.bench_program("ss-memcload"), self.addr[key], "--preload", "--conns", "1",
                         "--time", "0.05"], "preload", "tcp" if key != "unix" else "unix", -1, timeout=120)

    def measure(self, case, variant, rep):
        conns = case.split("=")[1]
        t = self.p["memcached_time"] if rep >= 0 else 0.2
        argv = [self.ctx.bench_program("ss-memcload"), self.addr[VARIANTS[variant][0]], "--conns", conns,
                "--time", str(t), "--seed", str(1000 + max(rep, 0))]
        out, _, _ = self.client(argv, case, variant, rep, timeout=60 + 5 * t)
        r = json_lines(out, " ".join(argv))[0]
        return [(case, "rate", None, r["ops_per_s"])]

"""redis-server with redis-benchmark: GET and SET, 1 and 50 connections, pipelined (-P 16) or not."""

import csv
import io
import re

from ..context import VARIANTS
from ..procs import SampleError
from ..workload import Server, Workload


class Redis(Workload):
    name = "redis"
    description = ("redis-server (no persistence) with redis-benchmark -t set,get -d 64 -r 10000: 1 and 50 "
                   "connections, without and with pipelining (-P 16); requests per second. The number "
                   "of requests per run is calibrated once (plain TCP) to last about the profile's time.")

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "req/s", "higher", "requests per second")

    def configs(self):
        return [(c, p) for p in self.p["redis_pipeline"] for c in self.p["redis_conns"]]

    def cases(self):
        # One redis-benchmark run yields SET and GET; cases are (connections, pipeline).
        return [f"c={c} P={p}" for c, p in self.configs()]

    def setup(self):
        p1, p2 = self.ctx.free_port(), self.ctx.free_port()
        self.unix_path = self.ctx.path("redis.sock")
        common = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                  "--protected-mode", "no", "--dir", self.ctx.path(), "--maxclients", "1000"]
        self.port = {"plain": p1, "supervised": p2}
        plain = Server(self, "plain", common + ["--port", str(p1), "--unixsocket", self.unix_path,
                                                "--unixsocketperm", "700"], False, tcp_port=p1, unix_path=self.unix_path)
        self.servers = {"plain": plain,
                        "supervised": Server(self, "supervised", common + ["--port", str(p2)], True, tcp_port=p2)}
        for s in self.servers.values():
            s.start()
        self.servers["unix"] = plain
        # Calibrate -n per case on plain TCP so each run lasts about redis_time per test.
        self.requests = {}
        for case in self.cases():
            rates = self._run(case, "tcp", -1, 5000)
            rate = min(v for _, _, _, v in rates)
            self.requests[case] = int(min(max(rate * self.p["redis_time"], 2000), 5_000_000))
        self.ctx.results.note(self.name, "requests per run (calibrated): " +
                              ", ".join(f"{c}: {n}" for c, n in self.requests.items()))

    def teardown(self):
        self.servers.pop("unix", None)
        super().teardown()

    def _run(self, case, variant, rep, n):
        c, p = (part.split("=")[1] for part in case.split())
        target = (["-s", self.unix_path] if variant == "unix"
                  else ["-h", "127.0.0.1", "-p", str(self.port[VARIANTS[variant][0]])])
        argv = ["redis-benchmark"] + target + ["-c", c, "-P", p, "-n", str(n), "-t", "set,get", "-d", "64",
                                                "-r", "10000", "--csv"]
        out, err, _ = self.client(argv, case, variant, rep, timeout=120 + 10 * self.p["redis_time"])
        rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] in ("SET", "GET")]
        if len(rows) != 2:
            raise SampleError("redis-benchmark printed no SET/GET results", " ".join(argv), (out + err)[-800:])
        # redis-benchmark goes on after a failed connection (e.g. its CONFIG probe) and still
        # measures with the connections that work: keep the rates, but report the message.
        if "Could not connect" in err or "Error" in err:
            # The port differs per server, so drop numbers-only detail to report each message once.
            msg = " / ".join(line.strip() for line in err.strip().splitlines()[:3])
            msg = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", msg)
            self.ctx.results.note(self.name, f"{variant}: redis-benchmark wrote on stderr (run goes on): {msg[:300]}")
        return [(f"{r[0]} {case}", "rate", None, float(r[1])) for r in rows]

    def measure(self, case, variant, rep):
        n = self.requests[case] if rep >= 0 else max(self.requests[case] // 10, 1000)
        return self._run(case, variant, rep, n)

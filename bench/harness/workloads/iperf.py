"""iperf3, one TCP stream (no AF_UNIX mode exists)."""

import json

from ..context import VARIANTS
from ..procs import SampleError
from ..workload import Server, Workload


class Iperf3(Workload):
    name = "iperf3"
    description = "iperf3 -c 127.0.0.1 -t SECONDS, one stream, client to server; received throughput."
    variants = ["tcp", "slipstream", "client-only", "server-only"]

    def declare(self):
        self.ctx.results.declare_metric(self.name, "throughput", "Gbit/s", "higher")

    def setup(self):
        p1, p2 = self.ctx.free_port(), self.ctx.free_port()
        self.port = {"plain": p1, "supervised": p2}
        self.servers = {
            "plain": Server(self, "plain", ["iperf3", "-s", "-p", str(p1), "-B", "127.0.0.1"], False, tcp_port=p1),
            "supervised": Server(self, "supervised", ["iperf3", "-s", "-p", str(p2), "-B", "127.0.0.1"], True,
                                 tcp_port=p2),
        }
        for s in self.servers.values():
            s.start()

    def measure(self, case, variant, rep):
        secs = self.p["iperf_time"] if rep >= 0 else 1
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(self.port[VARIANTS[variant][0]]), "-t", str(secs), "-J"]
        out, err, _ = self.client(argv, case, variant, rep, timeout=60 + 3 * secs)
        try:
            doc = json.loads(out)
            bps = doc["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError) as e:
            raise SampleError(f"unexpected iperf3 output ({e})", " ".join(argv), (out + err)[-800:])
        return [(case, "throughput", None, bps / 1e9)]

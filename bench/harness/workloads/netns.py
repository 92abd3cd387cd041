"""Issue 10's benchmark: ss-sweep between two network namespaces on one host (root only)."""

import os
import subprocess

from ..procs import NotSwitched, SampleError
from .sweep import Sweep

# In the run's own network namespace (bench/run's default as root) this subnet meets nothing;
# with --host-netns it must not be one of the host's.
SUBNET = "10.78.0"


class TwoNamespaces:
    """Network namespaces TAGn0 (clients) and TAGn1 (servers), each with an eth0 on one bridge.

    The bridge lives in the run's namespace. With --host-netns an ACCEPT rule for it goes into the
    host's FORWARD chain while it exists: dockerd sets that chain's policy to DROP and, with
    br_netfilter loaded, bridged frames pass it. The run's private namespace has no rules."""

    def __init__(self, tag, host_netns):
        self.tag = tag
        self.ns = [f"{tag}n0", f"{tag}n1"]
        self.bridge = f"{tag}br"
        self.rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"] if host_netns else None

    def address(self, i):
        return f"{SUBNET}.{i + 1}"

    def exec_prefix(self, i):
        return ["ip", "netns", "exec", self.ns[i]]

    def create(self):
        steps = [["ip", "link", "add", self.bridge, "type", "bridge"],
                 ["ip", "link", "set", self.bridge, "up"]]
        if self.rule:
            steps.append(["iptables", "-I", *self.rule])
        for i, ns in enumerate(self.ns):
            veth = f"{self.tag}v{i}"
            steps += [["ip", "netns", "add", ns],
                      ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
                      ["ip", "link", "set", veth, "master", self.bridge, "up"],
                      ["ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0"],
                      ["ip", "-n", ns, "link", "set", "eth0", "up"],
                      ["ip", "-n", ns, "link", "set", "lo", "up"]]
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise SampleError(f"{' '.join(argv)}: {r.stderr.strip()}", argv)

    def remove(self):
        """Removes what create made (what exists of it); returns what could not be removed."""
        left = []
        steps = [["ip", "netns", "del", ns] for ns in self.ns]  # their veth ends go with them
        steps.append(["ip", "link", "del", self.bridge])
        if self.rule:
            steps.append(["iptables", "-D", *self.rule])
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0 and "No such file" not in r.stderr and "Cannot find" not in r.stderr:
                left.append(f"{' '.join(argv)}: {r.stderr.strip()}")
        return left


class Netns(Sweep):
    name = "netns"
    description = ("ss-sweep (bench/c/sweep.c) between two network namespaces joined by veth and a "
                   "bridge, as two containers on one host: servers in one namespace (CPU 0, bound to "
                   "0.0.0.0), clients in the other (CPU 1). slipstream: both sides supervised, paired "
                   "across the namespaces by TCP sequence numbers by a root slipstreamd in the run's "
                   "namespace; client-only must stay TCP (both checked in the warm-up); unix: native "
                   "AF_UNIX through a path both see.")
    variants = ["tcp", "slipstream", "client-only", "unix"]
    needs_root = "ip netns, veth, a bridge; a root slipstreamd"
    opt_in = True
    listen_host = "0.0.0.0"  # the usual container server: the daemon must find its namespace's address

    def setup(self):
        self.net = TwoNamespaces(f"ssb{os.getpid() % 100000}",
                                 host_netns=not os.environ.get("SLIPSTREAM_BENCH_NETNS"))
        self.net.create()
        self.server_host = self.net.address(1)
        self.server_prefix = self.net.exec_prefix(1)
        self.client_prefix = self.net.exec_prefix(0)
        self.ctx.start_daemon(self.name)
        super().setup()

    def measure(self, case, variant, rep):
        points = super().measure(case, variant, rep)
        stats = self.last_client_stats  # the warm-up's (clients run with --stats only there)
        if stats and variant in ("slipstream", "client-only"):
            got = (stats["switched"], stats["relayed"], stats["left_on_tcp"])
            want = (1, 0, 0) if variant == "slipstream" else (0, 0)
            if got[:len(want)] != want:
                raise NotSwitched(f"{variant}: (switched, relayed, left on TCP) {got}, expected "
                                  f"{want}", None, stats["raw"])
        return points

    def teardown(self):
        try:
            super().teardown()
        finally:
            if getattr(self, "net", None):
                for what in self.net.remove():
                    self.ctx.results.note(self.name, f"left behind: {what}")

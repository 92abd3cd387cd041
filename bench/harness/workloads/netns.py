"""Issue 10's benchmark: ss-sweep between two network namespaces on one host (root only)."""

import os
import subprocess

from ..procs import SampleError
from .sweep import Sweep

SUBNET = "10.78.0"  # inside the run's own network namespace (bench/run), so it collides with nothing


class TwoNamespaces:
    """Network namespaces NAME-n0 (clients) and NAME-n1 (servers), each with an eth0 on one bridge.

    The bridge lives in the run's namespace. An ACCEPT rule for it goes into that namespace's
    FORWARD chain while it exists: dockerd sets the policy to DROP and, with br_netfilter loaded,
    bridged frames pass that chain (this matters only with --host-netns)."""

    def __init__(self, tag):
        self.tag = tag
        self.ns = [f"{tag}n0", f"{tag}n1"]
        self.bridge = f"{tag}br"
        self.rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    def address(self, i):
        return f"{SUBNET}.{i + 1}"

    def exec_prefix(self, i):
        return ["ip", "netns", "exec", self.ns[i]]

    def create(self):
        steps = [["ip", "link", "add", self.bridge, "type", "bridge"],
                 ["ip", "link", "set", self.bridge, "up"],
                 ["iptables", "-I", *self.rule]]
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
        for i, ns in enumerate(self.ns):
            subprocess.run(["ip", "link", "del", f"{self.tag}v{i}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        subprocess.run(["iptables", "-D", *self.rule], capture_output=True)


class Netns(Sweep):
    name = "netns"
    description = ("ss-sweep (bench/c/sweep.c) between two network namespaces joined by veth and a "
                   "bridge, as two containers on one host: servers in one namespace (CPU 0), clients "
                   "in the other (CPU 1). slipstream: both sides supervised, paired across the "
                   "namespaces by TCP sequence numbers by a root slipstreamd in the run's namespace; "
                   "client-only must stay TCP; unix: native AF_UNIX through a path both see.")
    variants = ["tcp", "slipstream", "client-only", "unix"]
    needs_root = "ip netns, veth, a bridge; a root slipstreamd"

    def setup(self):
        self.net = TwoNamespaces(f"ssb{os.getpid() % 100000}")
        self.net.create()
        self.server_host = self.net.address(1)
        self.server_prefix = self.net.exec_prefix(1)
        self.client_prefix = self.net.exec_prefix(0)
        # The daemon of the run's namespace, as a system-wide daemon would be (started on demand by
        # the first supervised server, it would live in the servers' namespace instead).
        daemon = os.path.join(self.ctx.build, "matcher", "slipstreamd")
        self.ctx.procs.run([daemon, "--idle-exit", "600"], f"{self.name}-slipstreamd", 30,
                           env=self.ctx.runtime_env())
        super().setup()

    def teardown(self):
        super().teardown()
        if getattr(self, "net", None):
            self.net.remove()

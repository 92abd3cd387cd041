#!/usr/bin/env python3
"""A connect is decided in the network namespace of the socket, not of the calling thread.

The client creates its socket in the host's namespace, then moves its thread into an empty
namespace (`setns`) and connects to 127.0.0.1: the kernel connects through the socket's namespace,
where a supervised server listens, so the connection is switched. Deciding by the thread's
namespace (as the supervisor once did, /proc/TID/ns/net) left it on TCP. Both programs run with
--no-preload, so every socket call goes through the supervisor. Needs root (`ip netns`).
"""

import os
import shutil
import subprocess
import sys
import unittest

import fixture_runs as fr
import harness
import switch_support as ss

SERVER = harness.PY_LISTENER + """
c, _ = l.accept()
c.sendall(c.recv(64))
c.close()
"""

CLIENT = """
import ctypes, os, socket, sys
s = socket.socket()
fd = os.open("/run/netns/" + sys.argv[2], os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"ping")
print(s.recv(64).decode())
"""


class SocketNamespace(fr.FixtureTest):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise unittest.SkipTest("needs root and ip")
        self.netns = f"slsock-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.netns], timeout=30)

    def test_connect_after_setns_is_decided_in_the_sockets_namespace(self):
        port_file, server_stats, client_stats = (self.path(n) for n in ("port", "s", "c"))
        server = self.start(harness.supervised(
            [sys.executable, "-c", SERVER, port_file], stats=True,
            extra=["--no-preload", "-o", server_stats]))
        port = fr.read_port(port_file)
        client = harness.run(harness.supervised(
            [sys.executable, "-c", CLIENT, str(port), self.netns], stats=True,
            extra=["--no-preload", "-o", client_stats]), timeout=30)
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertEqual(client.stdout.strip(), "ping")
        server.proc.wait(timeout=30)
        self.assertEqual(ss.read_stats(client_stats)["switched"], 1, open(client_stats).read())
        self.assertEqual(ss.read_stats(server_stats)["switched"], 1, open(server_stats).read())


if __name__ == "__main__":
    unittest.main()

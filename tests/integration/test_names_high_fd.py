#!/usr/bin/env python3
"""Hybrid mode: getsockname/getpeername of a switched socket whose fd number is beyond the
library's table of kept addresses (preload-fallback/names.c keeps fds 0..4095).

Such a socket's addresses cannot be kept, so each call must go to the supervisor once, as without
the library: fetching both addresses first (SLIPSTREAM_OPT_NAMES) and then passing the call on
anyway costs two notifications for one. Servers with thousands of connections (nginx, redis)
have such fds. The proof is the supervisor's count of trapped calls (--stats) against a
--no-preload run of the same client, and the kernel's answer is compared with a native run.
"""

import os

import fixture_runs as fr
import harness
import switch_support as ss
import test_preload as tp

HIGH_FD = 5000
CALLS = 3
CLIENT = f"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft <= {HIGH_FD}:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, {HIGH_FD} + 1), hard))
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
fd = s.detach()
import os
os.dup2(fd, {HIGH_FD})
os.close(fd)
h = socket.socket(fileno={HIGH_FD})
for _ in range({CALLS}):
    print("peer", h.getpeername() == ("127.0.0.1", port), "local", h.getsockname()[0])
h.sendall(b"x")
h.close()
"""


class NamesOfAHighFd(fr.FixtureTest):

    def run_case(self, supervise, extra=()):
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server_cmd = [harness.program("accept_later"), "--port-file", port_file]
        client_cmd = ["python3", "-c", CLIENT]
        stats = self.path("client.stats")
        if supervise:
            server = ss.Gated(self, harness.supervised(ss.after_gate(server_cmd)))
            server.start_program()
        else:
            server = ss.Gated(self, server_cmd)
        port = fr.read_port(port_file)
        client_cmd.append(str(port))
        if supervise:
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd), stats=True,
                                                       extra=["-o", stats, *extra]))
            client.start_program()
            result = client.finish()
        else:
            done = harness.run(client_cmd)
            result = done.returncode, done.stdout.splitlines(), done.stderr
        server.go()
        server_result = server.finish()
        self.assertEqual(server_result[:2], (0, ["accept: fd peer=127.0.0.1 read=1"]),
                         server_result)
        counts = None
        if supervise:
            with open(stats) as f:
                text = f.read()
            counts = tp.parse_counts(text)
            # The kernel's evidence is the supervisor's own: the connection was switched.
            self.assertEqual(counts["connections"].group("switched"), "1", text)
        return result, counts

    def test_each_call_costs_one_notification_as_without_the_library(self):
        native, _ = self.run_case(False)
        self.assertEqual(native[:2], (0, ["peer True local 127.0.0.1"] * CALLS), native)
        hybrid, counts = self.run_case(True)
        self.assertRunsAlike(native, hybrid, "names of a switched socket at a high fd")
        plain, plain_counts = self.run_case(True, extra=["--no-preload"])
        self.assertRunsAlike(native, plain, "the same without the library")

        def names(c):
            t = c["trapped"]
            return t.get("getsockname", 0) + t.get("getpeername", 0) + t.get("getsockopt", 0)
        self.assertGreaterEqual(names(plain_counts), 2 * CALLS, plain_counts)
        self.assertLessEqual(names(counts), names(plain_counts), counts)


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""--stats counts exactly what the program did.

Per connection, tcp_client (sink mode) makes one socket, connect, getpeername, getsockname and
shutdown call; the server makes one successful accept4 and one getpeername and getsockname per
connection, and socket, setsockopt, bind, listen and getsockname once. The summary goes to the -o
file (or stderr), never to the program's stdout.
"""

import re
import sys

import fixture_runs as fr
import harness
import switch_support as ss

CONNECTIONS = 7
QUEUED = 5  # connects toward a listen backlog of 1, never accepted


def parse_stats(text):
    """{call: count} from the "socket calls seen" table, plus the totals and connection lines."""
    counts = {}
    for m in re.finditer(r"^  (\w+) +(\d+)(?:  \(kernel (\d+), emulated (\d+), "
                         r"interrupted (\d+)\))?$", text, re.M):
        counts[m.group(1)] = int(m.group(2))
        if m.group(1) == "total":
            counts["kernel"], counts["emulated"], counts["interrupted"] = (
                int(m.group(3)), int(m.group(4)), int(m.group(5)))
    m = re.search(r"connections seen (\d+) \(connect (\d+), accept (\d+)\)", text)
    if m:
        counts["connections_seen"], counts["connects"], counts["accepts"] = map(int, m.groups())
    return counts


class Stats(fr.FixtureTest):

    def test_counts_match_what_the_programs_did(self):
        port_file = self.path("port")
        server_stats, client_stats = self.path("server.stats"), self.path("client.stats")
        server = self.start(harness.supervised(
            [harness.program("tcp_server"), "--port-file", port_file, "--mode", "sink",
             "--loop", "epoll", "--count", str(CONNECTIONS)],
            trace_file=None, stats=True, extra=["-o", server_stats]))
        fr.read_port(port_file)
        client = harness.run(harness.supervised(
            [harness.program("tcp_client"), "--port-file", port_file, "--mode", "sink",
             "--bytes", "10000", "--conns", str(CONNECTIONS)],
            stats=True, extra=["-o", client_stats]), timeout=60)
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertEqual(client.stdout, f"client: mode=sink connections={CONNECTIONS} "
                                        f"bytes={CONNECTIONS * 10000} errors=0\n")
        code, out, err = server.wait(30)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(out), 1, "stats must not reach the program's stdout")

        with open(client_stats) as f:
            c = parse_stats(f.read())
        for call in ("socket", "connect", "getpeername", "getsockname", "shutdown"):
            self.assertEqual(c.get(call), CONNECTIONS, f"client {call}: {c}")
        self.assertEqual(c["total"], 5 * CONNECTIONS)
        self.assertEqual(c["kernel"] + c["emulated"] + c["interrupted"], c["total"], c)
        self.assertEqual(c["connects"], CONNECTIONS)
        self.assertEqual(c["accepts"], 0)

        with open(server_stats) as f:
            s = parse_stats(f.read())
        for call, count in (("socket", 1), ("setsockopt", 1), ("bind", 1), ("listen", 1),
                            ("getpeername", CONNECTIONS), ("getsockname", CONNECTIONS + 1)):
            self.assertEqual(s.get(call), count, f"server {call}: {s}")
        # Each accept4 either took a connection or got EAGAIN from the non-blocking listener.
        self.assertGreaterEqual(s["accept4"], CONNECTIONS)
        self.assertEqual(s["accepts"], CONNECTIONS)
        self.assertEqual(s["connects"], 0)
        self.assertEqual(s["kernel"] + s["emulated"] + s["interrupted"], s["total"], s)

    def test_every_connection_seen_is_counted_once(self):
        """Non-blocking connects toward a listen queue that holds two (backlog 1) and is never
        accepted from: the others are still in their handshake when connect() returns EINPROGRESS
        and stay TCP. Each connection seen is counted once: switched (relayed ones among them) or
        left on TCP (docs/stats-schema.md)."""
        port = ss.free_port()
        server_code = ("import socket, sys, time\n"
                       "ls = socket.socket(); ls.bind(('127.0.0.1', int(sys.argv[1])))\n"
                       "ls.listen(1)\n"
                       "print('listening', flush=True); time.sleep(30)\n")
        client_code = ("import errno, socket, sys, time\n"
                       "socks = [socket.socket() for _ in range(int(sys.argv[2]))]\n"
                       "for s in socks:\n"
                       "    s.setblocking(False)\n"
                       "    rc = s.connect_ex(('127.0.0.1', int(sys.argv[1])))\n"
                       "    print(rc in (0, errno.EINPROGRESS))\n"
                       "time.sleep(0.5)\n")
        client_stats = self.path("client.stats")
        server = self.start(harness.supervised([sys.executable, "-c", server_code, str(port)],
                                               trace_file=None))
        server.out.wait_for("listening")
        client = harness.run(harness.supervised(
            [sys.executable, "-c", client_code, str(port), str(QUEUED)], stats=True,
            extra=["-o", client_stats]), timeout=60)
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertEqual(client.stdout, "True\n" * QUEUED)
        c = ss.read_stats(client_stats)
        self.assertEqual(c["seen"], QUEUED, c)
        self.assertEqual(c["switched"] + c["tcp"], QUEUED, c)
        self.assertGreaterEqual(c["tcp"], 1, f"some connects must have met the full queue: {c}")

    def test_stats_on_stderr_without_output_file(self):
        result = harness.run(harness.supervised([harness.program("lifecycle"), "exit", "0"],
                                                stats=True))
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "exiting 0\n")
        counts = parse_stats(result.stderr)
        self.assertEqual(counts.get("socket"), 1, result.stderr)
        self.assertEqual(counts.get("total"), 1)


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""--stats counts exactly what the program did.

Per connection, tcp_client (sink mode) makes one socket, connect, getpeername, getsockname and
shutdown call; the server makes one successful accept4 and one getpeername and getsockname per
connection, and socket, setsockopt, bind, listen and getsockname once. The summary goes to the -o
file (or stderr), never to the program's stdout.
"""

import re

import fixture_runs as fr
import harness

CONNECTIONS = 7


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

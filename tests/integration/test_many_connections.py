#!/usr/bin/env python3
"""1000 concurrent connections from one supervised client to one supervised server.

The client opens all its connections before it transfers anything (4 threads x 250 at once), so
1000 connects and 1000 accepts are in flight together; every connection then sends its own
pattern and verifies the server's count and FNV-1a hash of what arrived. Both supervisors'
--stats must count every connection switched.
"""

import fixture_runs as fr
import harness
import switch_support as ss

THREADS, PARALLEL, BYTES = 4, 250, 3000
TOTAL = THREADS * PARALLEL


class ManyConnections(fr.FixtureTest):

    def check(self, server_args, client_args):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", "sink",
                  "--count", str(TOTAL), "--backlog", "4096", *server_args]
        client = [harness.program("tcp_client"), "--port-file", port_file, "--mode", "sink",
                  "--bytes", str(BYTES), "--threads", str(THREADS), "--parallel", str(PARALLEL),
                  "--timeout", "90", *client_args]
        stats = {"server": self.path("server.stats"), "client": self.path("client.stats")}
        server_result, client_result, _ = fr.run_client_server(
            self, server, client, port_file, supervise=True, timeout=120, server_timeout=30,
            server_stats=stats["server"], client_stats=stats["client"])
        self.assertEqual(client_result[:2], (0, [f"client: mode=sink connections={TOTAL} "
                                                 f"bytes={TOTAL * BYTES} errors=0"]),
                         client_result[2][:20])
        reply = len(f"{BYTES} {0:016x}\n")
        self.assertEqual(server_result[:2], (0, [f"server: mode=sink connections={TOTAL} "
                                                 f"bytes_in={TOTAL * BYTES} "
                                                 f"bytes_out={TOTAL * reply} "
                                                 f"peer_host=127.0.0.1 errors=0"]),
                         server_result[2][:20])
        for side, path in stats.items():
            counts = ss.read_stats(path)
            self.assertIsNotNone(counts, f"{side}: no --stats summary")
            self.assertEqual((counts["switched"], counts["relayed"], counts["tcp"]),
                             (TOTAL, 0, 0), f"{side}: {counts}")

    def test_nonblocking_connects_epoll_server(self):
        self.check(["--loop", "epoll", "--concurrency", "single"], ["--nonblock-connect"])

    def test_blocking_connects_thread_server(self):
        self.check(["--loop", "epoll", "--concurrency", "thread"], [])


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""A threaded static C client (8 threads x 5 connections) against a thread-per-connection
server, both supervised: every byte verified, output as native, one connect per connection from
several threads (distinct tids in the trace), every connection switched (both --stats)."""

import fixture_runs as fr
import harness
import switch_support as ss

THREADS, CONNS = 8, 5


class ThreadedClient(fr.FixtureTest):

    def run_pair(self, supervise, client_trace=None, server_stats=None):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", "echo",
                  "--concurrency", "thread", "--loop", "epoll", "--count", str(THREADS * CONNS)]
        client = [harness.program("tcp_client"), "--port-file", port_file, "--mode", "echo",
                  "--bytes", "40000", "--chunk", "1000", "--half-close",
                  "--threads", str(THREADS), "--conns", str(CONNS)]
        return fr.run_client_server(self, server, client, port_file, supervise=supervise,
                                    client_trace=client_trace, server_stats=server_stats,
                                    client_stats=client_trace)

    def test_threaded_client(self):
        native_server, native_client, _ = self.run_pair(False)
        self.assertEqual(native_client[0], 0, native_client)
        trace = self.path("client.trace")
        server_stats = self.path("server.stats")
        sup_server, sup_client, port = self.run_pair(True, trace, server_stats)
        self.assertRunsAlike(native_server, sup_server, "server")
        self.assertRunsAlike(native_client, sup_client, "threaded client")
        self.assertEqual(sup_client[1], [f"client: mode=echo connections={THREADS * CONNS} "
                                         f"bytes={THREADS * CONNS * 40000} errors=0"])
        records = harness.read_trace(trace)
        connects = fr.calls(records, "connect")
        self.assertEqual(len(connects), THREADS * CONNS)
        self.assertTrue(all(r["args"].endswith(f", 127.0.0.1:{port}") and
                            r["result"] in fr.CONNECT_BLOCKING
                            for r in connects), connects)
        self.assertEqual(len({r["tid"] for r in connects}), THREADS,
                         "each client thread's connects are reported under its own tid")
        for side, path in (("server", server_stats), ("client", trace)):
            counts = ss.read_stats(path)
            self.assertIsNotNone(counts, f"{side}: no --stats summary")
            self.assertEqual((counts["switched"], counts["tcp"]), (THREADS * CONNS, 0),
                             f"{side}: {counts}")


if __name__ == "__main__":
    fr.main()

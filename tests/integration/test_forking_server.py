#!/usr/bin/env python3
"""A forking server (a child process per connection) under slipstream-trace.

The children inherit the seccomp filter: their getpeername/getsockname calls appear in the trace
under their own pids, emulated with the right addresses, and the output matches a native run.
"""

import fixture_runs as fr
import harness

CONNECTIONS = 6


class ForkingServer(fr.FixtureTest):

    def run_pair(self, loop, supervise):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", "sink",
                  "--concurrency", "fork", "--loop", loop, "--count", str(CONNECTIONS)]
        client = [harness.program("tcp_client"), "--port-file", port_file, "--mode", "sink",
                  "--bytes", "150000", "--threads", "2", "--conns", str(CONNECTIONS // 2)]
        trace = self.path(f"server-{loop}.trace")
        server_result, client_result, port = fr.run_client_server(
            self, server, client, port_file, supervise=supervise,
            server_trace=trace if supervise else None)
        return server_result, client_result, port, trace

    def check(self, loop):
        native_server, native_client, _, _ = self.run_pair(loop, supervise=False)
        self.assertEqual(native_server[0], 0, native_server)
        sup_server, sup_client, port, trace = self.run_pair(loop, supervise=True)
        self.assertRunsAlike(native_server, sup_server, "forking server")
        self.assertRunsAlike(native_client, sup_client, "client")
        records = harness.read_trace(trace)
        accepts = [r for r in records if r["call"] == "accept4" and r["result"].isdigit()]
        self.assertEqual(len(accepts), CONNECTIONS)
        parent_tids = {r["tid"] for r in accepts}
        self.assertEqual(len(parent_tids), 1, "the parent accepts every connection")
        peers = {fr.note_addr(r) for r in accepts}
        # Each child checks its connection's names: getpeername repeats the accepted peer and
        # getsockname names the listening port; both are answered for the child's own pid.
        child_peer = [r for r in fr.calls(records, "getpeername") if r["tid"] not in parent_tids]
        child_name = [r for r in fr.calls(records, "getsockname") if r["tid"] not in parent_tids]
        self.assertEqual(len({r["tid"] for r in child_peer}), CONNECTIONS)
        self.assertEqual({fr.note_addr(r) for r in child_peer}, peers)
        self.assertTrue(all(r["result"] == "0" for r in child_peer + child_name))
        self.assertEqual({fr.note_addr(r) for r in child_name}, {f"127.0.0.1:{port}"})

    def test_blocking_accept_loop(self):
        self.check("blocking")

    def test_epoll_accept_loop(self):
        self.check("epoll")


if __name__ == "__main__":
    fr.main()

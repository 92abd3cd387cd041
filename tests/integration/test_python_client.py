#!/usr/bin/env python3
"""A Python client (CPython, dynamically linked, glibc's socket calls) under slipstream-trace,
against the static C server: same output as native, and the trace shows its connect to
127.0.0.1:PORT and getpeername answering the destination (hybrid mode: the addresses the
library got with the answer to each switched connect)."""

import re
import sys

import fixture_runs as fr
import harness


class PythonClient(fr.FixtureTest):

    def run_pair(self, mode, supervise, trace=None):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", mode,
                  "--loop", "epoll", "--count", "3", "--source-bytes", "20000", "--seed", "4"]
        client = [sys.executable, fr.PYTHON_CLIENT, "--port-file", port_file, "--mode", mode,
                  "--bytes", "20000", "--conns", "3", "--seed", "4"]
        return fr.run_client_server(self, server, client, port_file, supervise=supervise,
                                    client_trace=trace)

    def check(self, mode):
        native = self.run_pair(mode, False)
        self.assertEqual(native[1][0], 0, native)
        trace = self.path("client.trace")
        supervised = self.run_pair(mode, True, trace)
        self.assertRunsAlike(native[0], supervised[0], "server")
        self.assertRunsAlike(native[1], supervised[1], "python client")
        port = supervised[2]
        records = harness.read_trace(trace)
        connects = fr.calls(records, "connect")
        self.assertEqual(len(connects), 3)
        # CPython makes a socket with a timeout non-blocking and polls: EINPROGRESS natively too.
        self.assertTrue(all(r["args"].endswith(f", 127.0.0.1:{port}") and
                            r["result"] in fr.CONNECT_NONBLOCKING
                            for r in connects), connects)
        # In hybrid mode the supervisor's answer to each switched connect carries both addresses
        # of the retained TCP socket (its note: "local -> peer"); the library answers
        # getsockname/getpeername from them, with no SLIPSTREAM_OPT_NAMES query, or passes the
        # call on when the connection is no longer fully open (a server that already closed:
        # source mode), and then the supervisor answers getpeername itself.
        names = [r for r in fr.calls(records, "getsockopt") if "SLIPSTREAM_OPT_NAMES" in r["args"]]
        self.assertEqual(names, [], records)
        switched = [re.search(r"switched to unix \((\S+) -> (\S+)\)", r["note"] or "")
                    for r in connects]
        self.assertTrue(all(switched), connects)
        peers = [m.group(2) for m in switched]
        peers += [fr.note_addr(r) for r in fr.calls(records, "getpeername")]
        self.assertEqual(set(peers), {f"127.0.0.1:{port}"}, records)
        # CPython reads SO_ERROR after its non-blocking connect: a socket-level option the
        # supervisor only lets through, so the library runs it in-process, switched socket or not.
        self.assertEqual([r for r in fr.calls(records, "getsockopt") if "SO_ERROR" in r["args"]],
                         [], records)

    def test_sink(self):
        self.check("sink")

    def test_echo(self):
        self.check("echo")

    def test_source(self):
        self.check("source")


if __name__ == "__main__":
    fr.main()

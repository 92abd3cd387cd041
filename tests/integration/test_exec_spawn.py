#!/usr/bin/env python3
"""Supervision follows exec and posix_spawn (vfork): a program that execs the static C client, and
one that posix_spawns it, produce the native output, and the client's connect appears in the
trace under the right pid with the right address."""

import re

import fixture_runs as fr
import harness


class ExecAndSpawn(fr.FixtureTest):

    def run_wrapped(self, wrapper, supervise, trace=None):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", "sink",
                  "--loop", "epoll", "--count", "2"]
        client = [harness.program(wrapper), harness.program("tcp_client"),
                  "--port-file", port_file, "--mode", "sink", "--bytes", "70000",
                  "--conns", "2"]
        return fr.run_client_server(self, server, client, port_file, supervise=supervise,
                                    client_trace=trace)

    def check(self, wrapper, pid_pattern):
        native = self.run_wrapped(wrapper, False)
        self.assertEqual(native[1][0], 0, native)
        trace = self.path("client.trace")
        supervised = self.run_wrapped(wrapper, True, trace)
        self.assertRunsAlike(native[0], supervised[0], "server")
        self.assertRunsAlike(native[1], supervised[1], wrapper)
        port = supervised[2]
        pids = [re.search(pid_pattern, line) for line in supervised[1][2]]
        pids = [m for m in pids if m]
        self.assertEqual(len(pids), 1, supervised[1][2])
        records = harness.read_trace(trace)
        connects = fr.calls(records, "connect")
        self.assertEqual(len(connects), 2)
        for r in connects:
            self.assertRegex(r["args"], rf"^\d+, 127\.0\.0\.1:{port}$")
            self.assertIn(r["result"], fr.CONNECT_BLOCKING)
        return pids[0], records, connects

    def test_exec_static_binary(self):
        m, records, connects = self.check("exec_static", r"exec_static: pid (\d+)")
        pid = m.group(1)
        # socket() before the exec and the client's calls after it: one process, one pid.
        self.assertEqual(records[0]["call"], "socket")
        self.assertEqual(records[0]["tid"], pid)
        self.assertTrue(all(r["tid"] == pid for r in connects), connects)

    def test_posix_spawn(self):
        m, records, connects = self.check("spawn", r"spawn: parent (\d+) child (\d+)")
        parent, child = m.group(1), m.group(2)
        self.assertTrue(any(r["call"] == "socket" and r["tid"] == parent for r in records))
        self.assertTrue(all(r["tid"] == child for r in connects), connects)


if __name__ == "__main__":
    fr.main()

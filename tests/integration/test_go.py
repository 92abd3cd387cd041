#!/usr/bin/env python3
"""Go client and server (net package, CGO_ENABLED=0: raw syscalls, non-blocking sockets and the
netpoller) under slipstream-trace: same output as native, and the trace shows Go's non-blocking
connect (EINPROGRESS) and accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) with the right addresses. Go and C
programs share the protocol and summary lines, so they are also run against each other."""

import re

import fixture_runs as fr
import harness


class GoClientServer(fr.FixtureTest):

    def go_server(self, port_file, count, mode="sink", listen="127.0.0.1:0"):
        return [harness.program("goserver"), "-listen", listen, "-port-file", port_file,
                "-mode", mode, "-count", str(count)]

    def go_client(self, port_file, workers, conns, mode="sink", host="127.0.0.1"):
        return [harness.program("goclient"), "-host", host, "-port-file", port_file,
                "-mode", mode, "-bytes", "120000", "-workers", str(workers),
                "-conns", str(conns)]

    def compare(self, server, client, port_file):
        native = fr.run_client_server(self, server, client, port_file, supervise=False)
        self.assertEqual(native[0][0], 0, native)
        self.assertEqual(native[1][0], 0, native)
        server_trace, client_trace = self.path("server.trace"), self.path("client.trace")
        supervised = fr.run_client_server(self, server, client, port_file, supervise=True,
                                          server_trace=server_trace, client_trace=client_trace)
        self.assertRunsAlike(native[0], supervised[0], "server")
        self.assertRunsAlike(native[1], supervised[1], "client")
        return (harness.read_trace(server_trace), harness.read_trace(client_trace),
                supervised[2])

    def test_go_client_go_server(self):
        port_file = self.path("port")
        s, c, port = self.compare(self.go_server(port_file, 8),
                                  self.go_client(port_file, 4, 2), port_file)
        connects = fr.calls(c, "connect")
        self.assertEqual(len(connects), 8)
        for r in connects:
            self.assertRegex(r["args"], rf"^\d+, 127\.0\.0\.1:{port}$")
            # Go connects non-blocking and waits in the netpoller.
            self.assertIn(r["result"], fr.CONNECT_NONBLOCKING, r)
        accepts = [r for r in fr.calls(s, "accept4") if r["result"].isdigit()]
        self.assertEqual(len(accepts), 8)
        for r in accepts:
            self.assertEqual(r["args"], "3, SOCK_NONBLOCK|SOCK_CLOEXEC")
        client_names = {fr.note_addr(r) for r in fr.calls(c, "getsockname")
                        if r["result"] == "0"}
        self.assertEqual({fr.note_addr(r) for r in accepts}, client_names)
        # EAGAIN answers on the non-blocking listener are the kernel's, as Go expects.
        for r in fr.calls(s, "accept4"):
            self.assertTrue(r["result"].isdigit() or r["result"].startswith("-1 EAGAIN"), r)

    def test_go_server_ipv6_echo(self):
        port_file = self.path("port")
        s, c, port = self.compare(self.go_server(port_file, 4, "echo", "[::1]:0"),
                                  self.go_client(port_file, 2, 2, "echo", "::1"), port_file)
        for r in fr.calls(c, "connect"):
            self.assertRegex(r["args"], rf"^\d+, \[::1\]:{port}$")
        peers = [fr.note_addr(r) for r in fr.calls(s, "accept4") if r["result"].isdigit()]
        self.assertEqual(len(peers), 4)
        self.assertTrue(all(p.startswith("[::1]:") for p in peers), peers)

    def test_c_client_go_server(self):
        port_file = self.path("port")
        client = [harness.program("tcp_client"), "--port-file", port_file, "--mode", "sink",
                  "--bytes", "120000", "--threads", "2", "--conns", "2"]
        s, c, port = self.compare(self.go_server(port_file, 4), client, port_file)
        self.assertEqual(len([r for r in fr.calls(s, "accept4") if r["result"].isdigit()]), 4)

    def test_go_client_c_server(self):
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file, "--mode", "sink",
                  "--loop", "epoll", "--count", "4"]
        s, c, port = self.compare(server, self.go_client(port_file, 2, 2), port_file)
        self.assertEqual(len(fr.calls(c, "connect")), 4)
        self.assertTrue(all(re.fullmatch(rf"\d+, 127\.0\.0\.1:{port}", r["args"])
                            for r in fr.calls(c, "connect")))


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""Static C client and server (gcc -static): same output natively and supervised, and --trace shows
the calls with the right addresses.

Each case runs the pair twice: both native, then each under its own slipstream-trace (started
separately). The server checks getpeername/getsockname of every connection, the client verifies
every byte, and the traces are cross-checked: the peers the server's accepts report are exactly
the local addresses the client's getsockname calls saw.
"""

import re

import fixture_runs as fr
import harness


class StaticCClientServer(fr.FixtureTest):

    def exchange(self, server_args, client_args, *, connections, dest_host):
        """Runs the pair natively and supervised; returns the supervised traces and the port."""
        port_file = self.path("port")
        server = [harness.program("tcp_server"), "--port-file", port_file,
                  "--count", str(connections), *server_args]
        client = [harness.program("tcp_client"), "--host", dest_host, "--port-file", port_file,
                  *client_args]
        native_server, native_client, _ = fr.run_client_server(
            self, server, client, port_file, supervise=False)
        self.assertEqual(native_client[0], 0, f"native client failed: {native_client}")
        self.assertEqual(native_server[0], 0, f"native server failed: {native_server}")
        server_trace, client_trace = self.path("server.trace"), self.path("client.trace")
        sup_server, sup_client, port = fr.run_client_server(
            self, server, client, port_file, supervise=True,
            server_trace=server_trace, client_trace=client_trace)
        self.assertRunsAlike(native_server, sup_server, "server")
        self.assertRunsAlike(native_client, sup_client, "client")
        self.assertIn(f"connections={connections} ", sup_server[1][0])
        self.assertIn("errors=0", sup_server[1][0])
        return harness.read_trace(server_trace), harness.read_trace(client_trace), port

    def check_connects(self, client_records, dest, count, nonblocking=False):
        connects = fr.calls(client_records, "connect")
        self.assertEqual(len(connects), count, connects)
        for r in connects:
            self.assertRegex(r["args"], rf"^\d+, {re.escape(dest)}$")
            self.assertIn(r["result"],
                          fr.CONNECT_NONBLOCKING if nonblocking else fr.CONNECT_BLOCKING, r)

    def check_accepts(self, server_records, client_records, peer_host, count):
        """Successful accepts name the client's addresses, as its getsockname calls saw them."""
        accepts = [r for r in server_records
                   if r["call"] in ("accept", "accept4") and re.fullmatch(r"\d+", r["result"])]
        self.assertEqual(len(accepts), count, accepts)
        peers = sorted(fr.note_addr(r) for r in accepts)
        for peer in peers:
            self.assertIsNotNone(peer)
            self.assertTrue(peer.startswith(peer_host + ":"), f"{peer} is not from {peer_host}")
        client_names = sorted(fr.note_addr(r) for r in fr.calls(client_records, "getsockname")
                              if r["result"] == "0")
        if peer_host.startswith("[::ffff:"):
            # An IPv4 client reaches a dual-stack server as ::ffff:a.b.c.d.
            client_names = sorted("[::ffff:{}]:{}".format(*n.rsplit(":", 1))
                                  for n in client_names)
        self.assertEqual(peers, client_names)

    def check_listen(self, server_records, port, bind_text):
        binds = fr.calls(server_records, "bind")
        self.assertEqual([r["args"].split(", ", 1)[1] for r in binds], [bind_text])
        listens = fr.calls(server_records, "listen")
        self.assertEqual(len(listens), 1)
        self.assertRegex(listens[0]["args"], r"^\d+, 4096$")
        self.assertEqual(listens[0]["result"], "0")
        names = [fr.note_addr(r) for r in fr.calls(server_records, "getsockname")]
        self.assertIn(bind_text.rsplit(":", 1)[0] + f":{port}", names)

    def test_sink_blocking_single_ipv4_accept4(self):
        """A blocking single-threaded server: accept4 waits for each connection (held call)."""
        s, c, port = self.exchange(
            ["--mode", "sink", "--concurrency", "single", "--loop", "blocking",
             "--accept", "accept4", "--family", "ipv4"],
            ["--mode", "sink", "--bytes", "200000", "--chunk", "8192", "--conns", "3"],
            connections=3, dest_host="127.0.0.1")
        self.check_listen(s, port, "127.0.0.1:0")
        self.check_connects(c, f"127.0.0.1:{port}", 3)
        self.check_accepts(s, c, "127.0.0.1", 3)

    def test_echo_epoll_ipv6_accept(self):
        """A non-blocking epoll server on ::1 using accept(2); the client half-closes."""
        s, c, port = self.exchange(
            ["--mode", "echo", "--concurrency", "single", "--loop", "epoll",
             "--accept", "accept", "--family", "ipv6"],
            ["--mode", "echo", "--bytes", "100000", "--chunk", "4000", "--half-close",
             "--conns", "3"],
            connections=3, dest_host="::1")
        self.check_listen(s, port, "[::1]:0")
        self.check_connects(c, f"[::1]:{port}", 3)
        self.check_accepts(s, c, "[::1]", 3)

    def test_source_epoll_v4mapped(self):
        """A dual-stack server (:: with IPV6_V6ONLY off) speaks first to an IPv4 client."""
        s, c, port = self.exchange(
            ["--mode", "source", "--source-bytes", "300000", "--seed", "11",
             "--concurrency", "single", "--loop", "epoll", "--accept", "accept4",
             "--family", "v4mapped"],
            ["--mode", "source", "--bytes", "300000", "--seed", "11", "--conns", "2"],
            connections=2, dest_host="127.0.0.1")
        self.check_listen(s, port, "[::]:0")
        self.check_connects(c, f"127.0.0.1:{port}", 2)
        self.check_accepts(s, c, "[::ffff:127.0.0.1]", 2)

    def test_source_blocking_v4mapped(self):
        """The same with a blocking accept(2) loop."""
        s, c, port = self.exchange(
            ["--mode", "source", "--source-bytes", "50000", "--concurrency", "single",
             "--loop", "blocking", "--accept", "accept", "--family", "v4mapped"],
            ["--mode", "source", "--bytes", "50000", "--conns", "2"],
            connections=2, dest_host="127.0.0.1")
        self.check_connects(c, f"127.0.0.1:{port}", 2)
        self.check_accepts(s, c, "[::ffff:127.0.0.1]", 2)

    def test_v4mapped_destination_from_ipv6_socket(self):
        """An AF_INET6 client connects to ::ffff:127.0.0.1: the trace decodes the mapped form."""
        s, c, port = self.exchange(
            ["--mode", "echo", "--concurrency", "single", "--loop", "epoll",
             "--family", "v4mapped"],
            ["--mode", "echo", "--bytes", "30000", "--conns", "2", "--half-close"],
            connections=2, dest_host="::ffff:127.0.0.1")
        self.check_connects(c, f"[::ffff:127.0.0.1]:{port}", 2)
        accepts = [r for r in s if r["call"] == "accept4" and r["result"].isdigit()]
        self.assertEqual(len(accepts), 2)
        for r in accepts:
            self.assertTrue(fr.note_addr(r).startswith("[::ffff:127.0.0.1]:"), r)

    def test_sink_thread_server_nonblocking_connect(self):
        """Thread-per-connection server, epoll accept loop; two client threads connect
        non-blocking (EINPROGRESS, then poll and SO_ERROR)."""
        s, c, port = self.exchange(
            ["--mode", "sink", "--concurrency", "thread", "--loop", "epoll",
             "--accept", "accept4", "--family", "ipv4"],
            ["--mode", "sink", "--bytes", "65536", "--threads", "2", "--conns", "3",
             "--nonblock-connect"],
            connections=6, dest_host="127.0.0.1")
        self.check_connects(c, f"127.0.0.1:{port}", 6, nonblocking=True)
        self.check_accepts(s, c, "127.0.0.1", 6)
        sockopts = [r for r in fr.calls(c, "getsockopt") if "SO_ERROR" in r["args"]]
        self.assertEqual(len(sockopts), 6)


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""Supervised client/server pairs are switched to AF_UNIX at connect/accept, whatever their
language and start order, and the kernel shows it.

Static C, Go (CGO_ENABLED=0) and Python (blocking socket API and asyncio) pairs, started as two
independent slipstream-trace runs with the server first, with the client first (it is refused,
then retries once the server listens), and as one process tree
(`slipstream-trace -- sh -c 'server & client'`). While the connection is held open (both programs
wait at their gates), the test proves the switch: both fds are AF_UNIX sockets connected to each
other (/proc/net/unix, ss), neither is in /proc/net/tcp, the real TCP connection lives on in the
supervisors only, and `slipstreamd --status --json` lists the pair with the programs' pids and
TCP addresses. Then 1 MiB is echoed and checked byte for byte, and --trace shows
`switched to unix` with the addresses while --stats counts the connection as switched.

The last tests repeat the two start orders without any gate, as users run them, and expect every
run to be switched.
"""

import re

import fixture_runs as fr
import harness
import switch_support as ss

ECHO_BYTES = 1 << 20
REPEATS = 40


class SwitchedPairs(ss.EvidenceMixin, fr.FixtureTest):

    def expected_lines(self):
        n = ECHO_BYTES
        return (f"client: mode=echo connections=1 bytes_out={n} bytes_in={n} errors=0",
                f"server: mode=echo connections=1 bytes_in={n} bytes_out={n} errors=0")

    def check_traces(self, client_records, server_records, client, server, port):
        switched = ss.trace_switches(client_records, "connect")
        self.assertEqual(len(switched), 1, fr.calls(client_records, "connect"))
        self.assertTrue(switched[0]["args"].endswith(f":{port}"), switched[0])
        note = ss.SWITCHED_NOTE.search(switched[0]["note"])
        self.assertEqual((note.group("local"), note.group("remote")),
                         (client["local"], client["peer"]))
        accepts = ss.trace_switches(server_records, "accept4")
        self.assertEqual(len(accepts), 1, server_records)
        self.assertEqual(fr.note_addr(accepts[0]), server["peer"])

    def check_client_stats(self, path, connects):
        """One connect switched; refused attempts before it (client first) stay with the kernel."""
        stats = ss.read_stats(path)
        self.assertIsNotNone(stats, f"no --stats summary in {path}")
        self.assertEqual((stats["connects"], stats["accepts"]), (connects, 0), stats)
        self.assertEqual((stats["switched"], stats["relayed"], stats["tcp"]),
                         (1, 0, connects - 1), stats)

    def check_server_stats(self, path):
        stats = ss.read_stats(path)
        self.assertIsNotNone(stats, f"no --stats summary in {path}")
        self.assertEqual((stats["accepts"], stats["switched"]), (1, 1), stats)
        self.assertEqual((stats["relayed"], stats["tcp"]), (0, 0), stats)

    def finish_pair(self, client, server, c, s):
        client.go()
        server.go()
        client_result, server_result = client.finish(), server.finish()
        want_client, want_server = self.expected_lines()
        self.assertEqual((client_result[0], ss.program_lines(client_result[1])),
                         (0, [want_client]), client_result[2])
        self.assertEqual((server_result[0], ss.program_lines(server_result[1])),
                         (0, [want_server]), server_result[2])

    def run_separately(self, lang, *, client_first=False, family="ipv4", host="127.0.0.1"):
        """Server and client, each under its own slipstream-trace."""
        peer = ss.PEERS[lang]
        server_out, client_out = self.path("server.out"), self.path("client.out")
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        if client_first:
            port = ss.free_port()
            client = ss.Gated(self, harness.supervised(ss.after_gate(
                peer("client", "--host", host, "--port", str(port), "--retry", "30",
                     "--wait-retry", *common)), trace_file=client_out, stats=True))
            client.start_program()
            client.wait_line(r"^refused ")  # nothing listens yet
            server = ss.Gated(self, harness.supervised(
                peer("server", "--family", family, "--port", str(port), *common),
                trace_file=server_out, stats=True))
            fr.wait_until(lambda: any(l["address"].endswith(f":{port}")
                                      for l in ss.daemon_status().get("listeners", [])),
                          20, "the server's listener registered")
            client.go()  # retry
        else:
            port_file = self.path("port")
            server = ss.Gated(self, harness.supervised(
                peer("server", "--family", family, "--port-file", port_file, *common),
                trace_file=server_out, stats=True))
            port = fr.read_port(port_file)
            client = ss.Gated(self, harness.supervised(ss.after_gate(
                peer("client", "--host", host, "--port-file", port_file, *common)),
                trace_file=client_out, stats=True))
            client.start_program()
        c, s = client.ready(), server.ready()
        self.assert_switched(c, s)
        self.finish_pair(client, server, c, s)
        client_records = harness.read_trace(client_out)
        connects = len(fr.calls(client_records, "connect"))
        self.assertEqual(connects, 2 if client_first else 1, client_records)
        self.check_traces(client_records, harness.read_trace(server_out), c, s, port)
        self.check_client_stats(client_out, connects)
        self.check_server_stats(server_out)

    def run_as_tree(self, lang):
        """`slipstream-trace -- sh -c 'server & client; wait'`: one supervisor for both."""
        peer = ss.PEERS[lang]
        port_file, out = self.path("port"), self.path("tree.out")
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        server = peer("server", "--port-file", port_file, *common)
        client = peer("client", "--port-file", port_file, *common)
        script = f"{quote(server)} & {quote(client)}; wait"
        tree = ss.Gated(self, harness.supervised(["sh", "-c", script], trace_file=out, stats=True))
        first, second = tree.ready(), tree.ready()
        ends = {first["role"]: first, second["role"]: second}
        self.assertEqual(set(ends), {"client", "server"})
        self.assert_switched(ends["client"], ends["server"])
        tree.go(2)  # each program takes one line
        code, lines, err = tree.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(ss.program_lines(lines)), sorted(self.expected_lines()), err)
        records = harness.read_trace(out)
        self.check_traces(records, records, ends["client"], ends["server"],
                          fr.read_port(port_file))
        stats = ss.read_stats(out)
        self.assertEqual((stats["connects"], stats["accepts"], stats["switched"]), (1, 1, 2),
                         stats)

    # Static C.
    def test_c_server_first(self):
        self.run_separately("c")

    def test_c_client_first(self):
        self.run_separately("c", client_first=True)

    def test_c_one_tree(self):
        self.run_as_tree("c")

    def test_c_ipv6(self):
        self.run_separately("c", family="ipv6", host="::1")

    def test_c_v4mapped(self):
        """An IPv4 client reaches a dual-stack server, which sees ::ffff:127.0.0.1."""
        self.run_separately("c", family="v4mapped", host="127.0.0.1")

    def test_c_v4mapped_from_ipv6_socket(self):
        """An AF_INET6 client connects to ::ffff:127.0.0.1."""
        self.run_separately("c", family="v4mapped", host="::ffff:127.0.0.1")

    # Go.
    def test_go_server_first(self):
        self.run_separately("go")

    def test_go_client_first(self):
        self.run_separately("go", client_first=True)

    def test_go_one_tree(self):
        self.run_as_tree("go")

    def test_go_ipv6(self):
        self.run_separately("go", family="ipv6", host="::1")

    # Python, blocking socket API.
    def test_python_server_first(self):
        self.run_separately("py")

    def test_python_client_first(self):
        self.run_separately("py", client_first=True)

    def test_python_one_tree(self):
        self.run_as_tree("py")

    # Python asyncio.
    def test_asyncio_server_first(self):
        self.run_separately("asyncio")

    def test_asyncio_client_first(self):
        self.run_separately("asyncio", client_first=True)

    def test_asyncio_one_tree(self):
        self.run_as_tree("asyncio")

    def test_asyncio_v4mapped(self):
        self.run_separately("asyncio", family="v4mapped")

    # Fails until fixed: the daemon lists the id of the thread that called connect() or
    # accept() as the connection's pid. SocketCalls::SwitchConnected
    # (supervisor/socket_calls_connect.cc:123 at 3677921) and SocketCalls::Deliver
    # (supervisor/socket_calls_accept.cc:131) pass c.tid() to Switcher::ClientSwitched and
    # Switcher::Installed, which send it as the message's pid; slipstreamd stores it as
    # client_pid/server_pid (matcher/daemon.cc, OnConnected and OnInstalled).
    # ThreadGroupOf(c.tid()) is the pid. Go programs connect from whichever thread runs the
    # goroutine, so their listings are wrong at random.
    def test_status_lists_pids_not_threads(self):
        """The C client connects from a second thread: --status must still name its pid."""
        port_file = self.path("port")
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, "--hold")))
        fr.read_port(port_file)
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ss.c_peer("client", "--port-file", port_file, "--hold", "--thread"))))
        client.start_program()
        c, s = client.ready(), server.ready()
        self.assert_switched(c, s)
        record = ss.status_connection(harness.fd_socket_inode(c["pid"], c["fd"]))
        client.go()
        server.go()
        self.assertEqual(client.finish()[0], 0)
        self.assertEqual(server.finish()[0], 0)
        self.assertEqual((record["client_pid"], record["server_pid"]), (c["pid"], s["pid"]),
                         f"slipstreamd must list pids, not thread ids: {record}")

    # Fails until fixed (about 1 run in 12 is not switched on the 2-core test machine): a
    # supervisor connects to slipstreamd only after it has launched the program
    # (supervisor/session.cc, Session::Run calls Switcher::Start; supervisor/main.cc launches
    # first), and the daemon sends the new session the list of supervised listeners when it gets
    # to accept it (matcher/daemon.cc, OnAccept). A program that connects at once is decided by
    # Switcher::Approve (supervisor/switcher.cc) from whatever part of that list has arrived:
    # often nothing, so the connection stays TCP although the server was supervised and
    # listening before the client started. MatcherClient::Connect does not wait for the list.
    def test_c_client_started_at_once_repeated(self):
        """Server first, then REPEATS clients that connect as soon as they start: every one is
        switched."""
        port_file = self.path("port")
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, "--count", str(REPEATS),
                      "--mode", "echo", "--bytes", "1000")))
        fr.read_port(port_file)
        on_tcp = []
        for i in range(REPEATS):
            trace = self.path(f"client{i}.trace")
            result = harness.run(harness.supervised(
                ss.c_peer("client", "--port-file", port_file, "--mode", "echo",
                          "--bytes", "1000", "--seed", str(i)), trace_file=trace), timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
            if not ss.trace_switches(harness.read_trace(trace), "connect"):
                on_tcp.append(i)
        code, out, err = server.finish()
        self.assertEqual((code, ss.program_lines(out)),
                         (0, [f"server: mode=echo connections={REPEATS} "
                              f"bytes_in={REPEATS * 1000} bytes_out={REPEATS * 1000} errors=0"]))
        self.assertEqual(on_tcp, [], f"{len(on_tcp)} of {REPEATS} clients stayed on TCP")

    # Fails until fixed (about 1 run in 13 here): a client that retries its connect every 10 ms
    # while the server starts can connect between the moment the server's supervisor has run
    # listen() on its copy of the socket (the kernel accepts connections from then on) and the
    # moment the daemon's broadcast of the new supervised listener reaches the client's
    # supervisor (supervisor/socket_calls.cc OnListen, supervisor/switcher.cc OnListener and
    # Approve). Switcher::Approve then sees a listener in sock_diag that is not in its list and
    # leaves the connection on TCP for good.
    def test_c_client_retrying_repeated(self):
        """Client first, retrying every 10 ms (no gate), REPEATS times: every one is switched."""
        on_tcp = []
        for i in range(REPEATS):
            port = ss.free_port()
            trace = self.path(f"client{i}.trace")
            client = ss.Gated(self, harness.supervised(ss.after_gate(
                ss.c_peer("client", "--port", str(port), "--retry", "30", "--mode", "echo",
                          "--bytes", "1000")), trace_file=trace))
            client.start_program()
            fr.wait_until(lambda: len(fr.calls(ss.trace_records(trace), "connect")) >= 2, 20,
                          "the client retrying")
            result = harness.run(harness.supervised(
                ss.c_peer("server", "--port", str(port), "--mode", "echo")), timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
            code, out, err = client.finish()
            self.assertEqual(code, 0, err)
            if not ss.trace_switches(harness.read_trace(trace), "connect"):
                on_tcp.append(i)
        self.assertEqual(on_tcp, [], f"{len(on_tcp)} of {REPEATS} retrying clients stayed on TCP")


def quote(cmd):
    return " ".join("'" + re.sub("'", "'\\''", part) + "'" for part in cmd)


if __name__ == "__main__":
    fr.main()

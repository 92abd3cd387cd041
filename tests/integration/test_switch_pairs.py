#!/usr/bin/env python3
"""Supervised client/server pairs are switched to AF_UNIX at connect/accept, whatever their
language and start order, and the kernel shows it.

Static C, dynamically linked C, Go (CGO_ENABLED=0) and Python (blocking socket API and asyncio)
pairs, started as two
independent slipstream-trace runs with the server first, with the client first (it is refused,
then retries once the server listens), and as one process tree
(`slipstream-trace -- sh -c 'server & client'`). While the connection is held open (both programs
wait at their gates), the test proves the switch: both fds are AF_UNIX sockets connected to each
other (/proc/net/unix, ss), neither is in /proc/net/tcp, the real TCP connection lives on in the
supervisors only, and `slipstreamd --status --json` lists the pair with the programs' pids and
TCP addresses. Then 1 MiB is echoed and checked byte for byte, and --trace shows
`switched to unix` with the addresses while --stats counts the connection as switched. The
dynamically linked programs (C and CPython) run in hybrid mode: their --stats must show the calls
libslipstream-preload.so served in-process.

The last tests start the second program while the daemon is slow (stopped for a moment), without
any gate, as users run them, and expect the connection to be switched all the same.
"""

import os
import re
import signal
import time

import fixture_runs as fr
import harness
import switch_support as ss

ECHO_BYTES = 1 << 20
SYS_LISTEN = 50


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
        accepts = ss.accept_switches(server_records)
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
        # A dynamically linked client (Python) makes its refused connect in-process (hybrid mode).
        in_process = ss.preload_in_process(client_out, "connect")
        self.assertEqual(connects + in_process, 2 if client_first else 1, client_records)
        self.check_traces(client_records, harness.read_trace(server_out), c, s, port)
        self.check_client_stats(client_out, connects)
        self.check_server_stats(server_out)
        self.check_hybrid(lang, client_out, server_out)

    def check_hybrid(self, lang, *outputs):
        """A dynamically linked program runs in hybrid mode: its socket() calls were served
        in-process (and nothing of a static or Go program was)."""
        for path in outputs:
            served = ss.preload_in_process(path, "socket")
            if lang in ss.DYNAMIC_PEERS:
                self.assertGreaterEqual(served, 1, f"{lang}: no hybrid mode in {path}")
            else:
                self.assertEqual(served, 0, f"{lang}: {path}")

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
        if lang in ss.DYNAMIC_PEERS:
            self.assertGreaterEqual(ss.preload_in_process(out, "socket"), 2)

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

    # connect() to the unspecified address reaches this host (Linux sends it to the loopback
    # address, or to the socket's bound address): a listener on 127.0.0.1 or ::1 takes it, and the
    # connection must be switched like any other (regression: the literal 0.0.0.0 was compared
    # with the listener's address, so it stayed TCP).
    def test_c_connect_to_unspecified(self):
        self.run_separately("c", host="0.0.0.0")

    def test_c_connect_to_unspecified_ipv6(self):
        self.run_separately("c", family="ipv6", host="::")

    def test_c_connect_to_unspecified_v4mapped(self):
        self.run_separately("c", host="::ffff:0.0.0.0")

    def test_go_connect_to_unspecified(self):
        self.run_separately("go", host="0.0.0.0")

    def test_python_connect_to_unspecified(self):
        self.run_separately("py", family="ipv6", host="::")

    # Dynamically linked C, in hybrid mode.
    def test_c_dyn_server_first(self):
        self.run_separately("c_dyn")

    def test_c_dyn_client_first(self):
        self.run_separately("c_dyn", client_first=True)

    def test_c_dyn_one_tree(self):
        self.run_as_tree("c_dyn")

    def test_c_dyn_ipv6(self):
        self.run_separately("c_dyn", family="ipv6", host="::1")

    def test_c_dyn_v4mapped(self):
        self.run_separately("c_dyn", family="v4mapped", host="127.0.0.1")

    def test_c_dyn_v4mapped_from_ipv6_socket(self):
        self.run_separately("c_dyn", family="v4mapped", host="::ffff:127.0.0.1")

    def test_c_dyn_connect_to_unspecified(self):
        self.run_separately("c_dyn", host="0.0.0.0")

    def test_c_dyn_connect_to_unspecified_v4mapped(self):
        self.run_separately("c_dyn", host="::ffff:0.0.0.0")

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

    # Regression: slipstreamd listed the id of the thread that called connect() or accept() as
    # the connection's pid (Go programs connect from whichever thread runs the goroutine).
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

    def stop_daemon_for_a_while(self):
        """SIGSTOPs slipstreamd, as if it were descheduled or busy; returns a function that
        lets it go on (also run at cleanup)."""
        pid = ss.daemon_status()["pid"]
        os.kill(pid, signal.SIGSTOP)
        resume = lambda: os.kill(pid, signal.SIGCONT) if ss.alive(pid) else None
        self.addCleanup(resume)
        return resume

    def wait_connected_or_held(self, client, program_pid, syscall):
        """Waits until the client is connected (returns its ready line's fields), or its program
        has sat in `syscall` for half a second (Slipstream holds the call until it can decide;
        returns None)."""
        since, ready = [], []

        def settled():
            try:
                ready.append(client.ready(timeout=0.02))
                return True
            except TimeoutError:
                pass
            if fr.current_syscall(program_pid) == syscall:
                since.append(time.monotonic())
                return time.monotonic() - since[0] >= 0.5
            since.clear()
            return False
        fr.wait_until(settled, 15, "the client connected or held")
        return ready[0] if ready else None

    def resume_and_check_switched(self, resume, client, server, ready):
        """Lets the daemon go on; the pair (`ready`: the client's ready line, if it came while
        the daemon was stopped) must be switched and both programs must finish cleanly."""
        resume()
        c, s = ready or client.ready(), server.ready()
        self.assert_switched(c, s)
        client.go()
        server.go()
        self.assertEqual(client.finish()[0], 0)
        self.assertEqual(server.finish()[0], 0)

    # Regression: a supervisor decided its program's first connect before the daemon's list of
    # supervised listeners had arrived, and left it on TCP. Stopping the daemon while the client
    # starts makes that race certain; the connect must wait for the list (kHello) instead.
    def test_c_client_started_while_daemon_busy(self, peer=ss.c_peer):
        """Server first; a client started while the daemon is slow must still be switched."""
        port_file = self.path("port")
        server = ss.Gated(self, harness.supervised(
            peer("server", "--port-file", port_file, "--hold")))
        fr.read_port(port_file)
        resume = self.stop_daemon_for_a_while()
        client = ss.Gated(self, harness.supervised(
            peer("client", "--port-file", port_file, "--hold")))
        c = self.wait_connected_or_held(client, fr.program_pid(client.pid), fr.SYS_CONNECT)
        self.resume_and_check_switched(resume, client, server, c)

    # Regression: a client retrying its connect while its server starts could connect as plain
    # TCP around the server's listen() (the listener is registered just before it; a retry that
    # found no listener went to the kernel, which then found one). Stopping the daemon while the
    # server starts widens that window.
    def test_c_client_retrying_while_daemon_busy(self, peer=ss.c_peer):
        """Client first, retrying every 10 ms; the server starts while the daemon is slow."""
        port = ss.free_port()
        trace = self.path("client.trace")
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            peer("client", "--port", str(port), "--retry", "30", "--hold")),
            trace_file=trace))
        client.start_program()
        if peer is ss.c_peer:
            fr.wait_until(lambda: len(fr.calls(ss.trace_records(trace), "connect")) >= 2, 20,
                          "the client retrying")
        else:
            # A dynamically linked client's refused connects run in-process, and their records
            # are written at its exit: let it retry for a while (every 10 ms) instead.
            fr.wait_until(lambda: fr.current_syscall(fr.program_pid(client.pid)) is not None,
                          20, "the client started")
            time.sleep(0.3)
        resume = self.stop_daemon_for_a_while()
        server = ss.Gated(self, harness.supervised(
            peer("server", "--port", str(port), "--hold")))
        c = self.wait_connected_or_held(client, fr.program_pid(server.pid), SYS_LISTEN)
        self.resume_and_check_switched(resume, client, server, c)

    # The same in hybrid mode: the library serves the client's connects to a port without a
    # supervised listener in-process, and must send them to the supervisor once the server's
    # listener is in slipstreamd's table (docs/design.md, "The supervised-listener table").
    def test_c_dyn_client_started_while_daemon_busy(self):
        self.test_c_client_started_while_daemon_busy(ss.c_dyn_peer)

    def test_c_dyn_client_retrying_while_daemon_busy(self):
        self.test_c_client_retrying_while_daemon_busy(ss.c_dyn_peer)


def quote(cmd):
    return " ".join("'" + re.sub("'", "'\\''", part) + "'" for part in cmd)


if __name__ == "__main__":
    fr.main()

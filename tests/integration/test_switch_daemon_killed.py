#!/usr/bin/env python3
"""kill -9 of slipstreamd: switched connections go on, new ones stay TCP, pairing resumes.

A supervised echo server serves a supervised client that is halfway through a 4 MiB echo and a
second supervised client that connects once before, once during and once after the daemon's
absence. After `kill -9` of the daemon (its pid from `slipstreamd --status --json`): the
half-done connection finishes byte-exact; a new connection from the running supervisors stays
TCP (kernel evidence) and works; once a daemon is back (started by hand with the same
SLIPSTREAM_RUNTIME_DIR, or started by the supervisors themselves after 10 s without one) the
supervisors re-register within seconds and the next connection is switched again. The killed
daemon leaves its socket file behind; a new slipstream-trace replaces it and pairs.
"""

import os
import time

import fixture_runs as fr
import harness
import switch_support as ss

BIG = 4 << 20
SMALL = 1 << 16


class DaemonKilled(ss.EvidenceMixin, fr.FixtureTest):
    PEER = staticmethod(ss.c_peer)  # test_preload.py runs it with the dynamically linked peer

    def start_server(self, count):
        port_file = self.path("port")
        self.server_stats = self.path("server.stats")
        server = ss.Gated(self, harness.supervised(
            self.PEER("server", "--port-file", port_file, "--threads", "--count", str(count),
                      "--mode", "echo", "--log"), stats=True, extra=["-o", self.server_stats]))
        fr.read_port(port_file)
        return server, port_file

    def start_client(self, port_file, name, *args):
        stats = self.path(f"{name}.stats")
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            self.PEER("client", "--port-file", port_file, "--mode", "echo", *args)),
            stats=True, extra=["-o", stats]))
        client.start_program()
        return client, stats

    def server_end_on_tcp(self, server_pid, client_end):
        """The server's side of a TCP connection: a TCP socket held by the server program."""
        entries = [e for e in ss.tcp_sockets() if e[0] == ss.canonical(client_end["peer"]) and
                   e[1] == ss.canonical(client_end["local"])]
        self.assertEqual(len(entries), 1, entries)
        self.assertIn(entries[0][3], fr.socket_inodes(server_pid))

    def next_connection(self, client):
        client.wait_line(r"^waiting ")
        client.go()
        return client.ready()

    def wait_registered(self, supervisors, port_file, timeout):
        """Waits until the daemon knows every supervisor and the server's listener again."""
        port = fr.read_port(port_file)

        def back():
            status = ss.daemon_status()
            return (status.get("pid") and
                    set(supervisors) <= {s["pid"] for s in status["supervisors"]} and
                    any(l["address"].endswith(f":{port}") for l in status["listeners"]))
        start = time.monotonic()
        fr.wait_until(back, timeout, "supervisors and listener registered with the new daemon")
        return time.monotonic() - start

    def check_outputs(self, server, big, small):
        code, out, err = big.finish(60)
        self.assertEqual((code, ss.program_lines(out)),
                         (0, [f"client: mode=echo connections=1 bytes_out={BIG} bytes_in={BIG} "
                              "errors=0"]), err)
        code, out, err = small.finish(60)
        self.assertEqual((code, ss.program_lines(out)),
                         (0, [f"client: mode=echo connections=3 bytes_out={3 * SMALL} "
                              f"bytes_in={3 * SMALL} errors=0"]), err)
        code, out, err = server.finish(60)
        total = BIG + 3 * SMALL
        self.assertEqual(ss.summary(out, "server"),
                         f"server: mode=echo connections=4 bytes_in={total} bytes_out={total} "
                         "errors=0", err)

    def run_kill_and_return(self, restart):
        server, port_file = self.start_server(4)
        server_pid = fr.program_pid(server.pid)
        big, _ = self.start_client(port_file, "big", "--bytes", str(BIG), "--hold", "--hold-mid")
        c = big.ready()
        server_side = self.server_side_of(server_pid, c)
        self.assert_switched(c, server_side)
        big.go()
        big.wait_line(r"^midway ")
        small, small_stats = self.start_client(port_file, "small", "--bytes", str(SMALL),
                                               "--count", "3", "--wait-connect", "--hold")
        first = self.next_connection(small)
        self.assert_switched(first, self.server_side_of(server_pid, first))
        small.go()

        socket_path = ss.daemon_status()["socket"]
        ss.kill_daemon(self)
        killed_at = time.monotonic()
        self.assertTrue(os.path.exists(socket_path), "kill -9 leaves the socket file")
        self.assertEqual(ss.daemon_status(), {"schema": 1, "running": False})

        big.go()  # the switched connection finishes its 4 MiB without the daemon
        second = self.next_connection(small)
        self.assert_on_tcp(second)
        self.server_end_on_tcp(server_pid, second)
        small.go()
        self.assertLess(time.monotonic() - killed_at, 9, "still before any daemon restart")

        if restart:
            result = harness.run([ss.DAEMON_BIN], timeout=30)  # detaches once it listens
            self.assertEqual(result.returncode, 0, result.stderr)
            took = self.wait_registered([server.pid, small.pid], port_file, 10)
            self.assertLess(took, 5, "supervisors reconnect every second")
        else:
            # Supervisors reconnect every second and start a daemon after 10 s without one.
            self.wait_registered([server.pid, small.pid], port_file, 25)
            self.assertGreater(time.monotonic() - killed_at, 9)
        third = self.next_connection(small)
        self.assert_switched(third, self.server_side_of(server_pid, third))
        small.go()
        self.check_outputs(server, big, small)
        counts = ss.read_stats(self.server_stats)
        # A preloaded server accepts a connection nobody is switching in-process: it is counted by
        # the library, not the supervisor.
        in_process = counts["preload_tcp_accepts"]
        self.assertEqual((counts["accepts"] + in_process, counts["switched"],
                          counts["tcp"] + in_process), (4, 3, 1), counts)
        counts = ss.read_stats(small_stats)
        self.assertEqual((counts["seen"], counts["switched"], counts["relayed"]), (3, 2, 0), counts)

    def server_side_of(self, server_pid, client_end, timeout=10.0):
        """The ready-line view of the server's end of `client_end`'s switched connection. The
        client prints its ready line when its connect returns; the server's accept may complete a
        little later (it claims the end from the daemon), so this waits for the server's fd."""
        c_ino = harness.fd_socket_inode(client_end["pid"], client_end["fd"])

        def find():
            peers = ss.unix_peers()
            s_ino = peers.get(c_ino) if peers else None
            for fd, link in fr.fd_links(server_pid).items():
                if s_ino is not None and link == f"socket:[{s_ino}]":
                    return {"pid": server_pid, "fd": fd, "local": client_end["peer"],
                            "peer": client_end["local"]}
            return None
        return fr.wait_until(find, timeout, f"a server fd that is the peer of {client_end}")

    def test_restarted_by_hand(self):
        self.run_kill_and_return(restart=True)

    def test_restarted_by_the_supervisors(self):
        self.run_kill_and_return(restart=False)

    # Regression: a connect made while the daemon was gone was counted as seen but neither
    # switched, relayed nor left on TCP. Checks that such a connection stays on TCP and is
    # counted as left on TCP.
    def test_stats_count_a_connection_made_without_daemon(self):
        server, port_file = self.start_server(1)
        client, stats = self.start_client(port_file, "client", "--bytes", str(SMALL),
                                          "--wait-connect", "--hold")
        ss.kill_daemon(self)
        end = self.next_connection(client)
        self.assert_on_tcp(end)
        client.go()
        self.assertEqual(client.finish()[0], 0)
        self.assertEqual(server.finish()[0], 0)
        counts = ss.read_stats(stats)
        self.assertEqual((counts["seen"], counts["switched"], counts["relayed"], counts["tcp"]),
                         (1, 0, 0, 1), f"--stats of the client: {counts}")

    def test_stale_socket_is_replaced(self):
        """After kill -9 with nobody connected, a new slipstream-trace starts a daemon that
        replaces the socket file, and pairs."""
        # A daemon to kill (the harness's dir may not have one yet).
        run = harness.run(harness.supervised([harness.program("lifecycle"), "exit", "0"]))
        self.assertEqual(run.returncode, 0, run.stderr)
        status = ss.daemon_status()
        socket_path = status["socket"]
        ss.kill_daemon(self)
        self.assertTrue(os.path.exists(socket_path), "kill -9 leaves the socket file")
        self.assertEqual(ss.daemon_status(), {"schema": 1, "running": False}, "nobody answers on it")
        server, port_file = self.start_server(1)
        new_pid = ss.daemon_status()["pid"]  # answering on the same path
        self.assertNotEqual(new_pid, status["pid"])
        client, _ = self.start_client(port_file, "client", "--bytes", str(SMALL), "--hold")
        c = client.ready()
        self.assert_switched(c, self.server_side_of(fr.program_pid(server.pid), c))
        client.go()
        self.assertEqual(client.finish()[0], 0)
        self.assertEqual(server.finish()[0], 0)


if __name__ == "__main__":
    fr.main()

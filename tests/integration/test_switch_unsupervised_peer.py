#!/usr/bin/env python3
"""A supervised program whose peer is not supervised stays on plain TCP, and everything works.

Supervised client with an unsupervised server, and unsupervised client with a supervised server
(static C, dynamically linked C in hybrid mode, Go, Python asyncio): while connected, both fds are TCP sockets established to each
other (/proc/net/tcp, never /proc/net/unix), the daemon lists no switched connection, and the
supervised side's --stats counts the connection as left on TCP with nothing switched or relayed,
and a supervised server's accept asks the daemon nothing (its `claims_total` does not move).
Echo (both directions), half-close sink, server-first source and round trips are byte-exact.
"""

import fixture_runs as fr
import harness
import switch_support as ss

MODES = (("echo", 1 << 20), ("sink", 1 << 16), ("source", 1 << 20), ("rr", 0))


class UnsupervisedPeer(ss.EvidenceMixin, fr.FixtureTest):

    def run_pair(self, *, client_lang, server_lang, supervise_client, mode, size):
        port_file, stats = self.path(f"port.{mode}"), self.path(f"stats.{mode}")
        extra = ["-o", stats]
        server_cmd = ss.PEERS[server_lang]("server", "--port-file", port_file, "--mode", mode,
                                           "--bytes", str(size), "--seed", "7", "--hold", "--log")
        client_cmd = ss.PEERS[client_lang]("client", "--port-file", port_file, "--mode", mode,
                                           "--bytes", str(size), "--seed", "7", "--rounds", "1000",
                                           "--hold", "--log")
        if supervise_client:
            server = ss.Gated(self, server_cmd)
            fr.read_port(port_file)
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd), stats=True,
                                                       extra=extra))
            client.start_program()
        else:
            server = ss.Gated(self, harness.supervised(server_cmd, stats=True, extra=extra))
            fr.read_port(port_file)
            claims_before = ss.daemon_status().get("claims_total")  # before the client connects
            client = ss.Gated(self, client_cmd)
        c, s = client.ready(), server.ready()
        c_ino, s_ino = self.assert_on_tcp(c), self.assert_on_tcp(s)
        ends = {(e[0], e[1]): e[3] for e in ss.tcp_sockets()}
        self.assertEqual(ends.get((ss.canonical(s["local"]), ss.canonical(s["peer"]))), s_ino)
        self.assertEqual(ends.get((ss.canonical(c["local"]), ss.canonical(c["peer"]))), c_ino)
        client.go()
        server.go()
        client_code, client_out, client_err = client.finish()
        server_code, server_out, server_err = server.finish()
        self.assertEqual(client_code, 0, client_err)
        self.assertEqual(server_code, 0, server_err)
        sent = ss.conn_lines(client_out)[0]
        got = ss.conn_lines(server_out)[0]
        if mode in ("echo", "sink", "rr"):
            self.assertEqual((got["bytes_in"], got["crc_in"]), (sent["bytes_out"], sent["crc_out"]))
        if mode in ("echo", "source"):
            self.assertEqual(int(sent["bytes_in"]), size)
        self.assertRegex(ss.summary(client_out, "client"), r"connections=1 .*errors=0$")
        if not supervise_client:
            # No supervised client was switching to the port, so the server's accept asked the
            # daemon nothing (the supervisor path reads the port's `switching` count, as the
            # library does): a claim would cost a round trip to slipstreamd per accept.
            self.assertIsNotNone(claims_before)
            self.assertEqual(ss.daemon_status().get("claims_total"), claims_before)
        counts = ss.read_stats(stats)
        supervised_lang = client_lang if supervise_client else server_lang
        hybrid = supervised_lang in ss.DYNAMIC_PEERS
        # Hybrid mode: a connect to a port without a supervised listener, and an accept while no
        # switch to the port is in flight, are made and left on TCP in-process by the library;
        # the supervisor never sees them.
        self.assertEqual((counts["switched"], counts["relayed"], counts["tcp"]),
                         (0, 0, 0 if hybrid else 1), counts)
        self.assertEqual(ss.preload_left_on_tcp(stats), 1 if hybrid else 0)
        if supervised_lang in ss.DYNAMIC_PEERS:  # hybrid mode: calls served in-process
            served = ss.preload_counts(stats)
            self.assertGreaterEqual(served.get("socket", 0), 1, served)
            self.assertEqual(served.get("connect"), 1 if supervise_client else None, served)

    def check_all_modes(self, **kw):
        for mode, size in MODES:
            with self.subTest(mode=mode):
                self.run_pair(mode=mode, size=size, **kw)

    def test_supervised_c_client_native_c_server(self):
        self.check_all_modes(client_lang="c", server_lang="c", supervise_client=True)

    def test_native_c_client_supervised_c_server(self):
        self.check_all_modes(client_lang="c", server_lang="c", supervise_client=False)

    def test_supervised_c_dyn_client_native_c_dyn_server(self):
        self.check_all_modes(client_lang="c_dyn", server_lang="c_dyn", supervise_client=True)

    def test_native_c_dyn_client_supervised_c_dyn_server(self):
        self.check_all_modes(client_lang="c_dyn", server_lang="c_dyn", supervise_client=False)

    def test_supervised_asyncio_client_native_c_server(self):
        self.run_pair(client_lang="asyncio", server_lang="c", supervise_client=True, mode="rr",
                      size=0)

    def test_supervised_go_client_native_c_server(self):
        self.run_pair(client_lang="go", server_lang="c", supervise_client=True, mode="echo",
                      size=1 << 20)

    def test_native_asyncio_client_supervised_go_server(self):
        self.run_pair(client_lang="asyncio", server_lang="go", supervise_client=False,
                      mode="sink", size=1 << 20)


if __name__ == "__main__":
    fr.main()

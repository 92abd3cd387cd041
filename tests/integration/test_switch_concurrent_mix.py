#!/usr/bin/env python3
"""200 concurrent connections to one supervised server from supervised and unsupervised clients:
every supervised pair is switched, every other one stays TCP, nobody is mispaired.

Four client processes (two under slipstream-trace, two not) are released together and each opens
50 connections at once to one supervised thread-per-connection server. While all 200 are open
the kernel shows: each supervised client's fd is an AF_UNIX socket whose peer (ss) is one of the
server's fds, each unsupervised client's fd is a TCP socket, the server holds exactly 100 of each,
and slipstreamd lists exactly the supervised clients' ends with their own addresses. Then each
connection echoes its own pattern (seeds unique across all clients) and checks it; the server logs
per-connection peer addresses and CRC-32s, which must match the clients' own getsockname
addresses and what they sent.

DynamicConcurrentMix: the same with switch_peer_dyn everywhere, in hybrid mode (the unsupervised
clients have no library; the supervised ones and the server make their calls in-process where
they may).
"""

import fixture_runs as fr
import harness
import switch_support as ss

CLIENTS, PER_CLIENT, BYTES = 4, 50, 4096
TOTAL = CLIENTS * PER_CLIENT


class ConcurrentMix(ss.HybridMixin, ss.EvidenceMixin, fr.FixtureTest):

    def peer(self, role, *args):
        return [self.fixture("switch_peer"), role, *args]

    def test_200_concurrent_mixed_clients(self):
        port_file, server_stats = self.path("port"), self.path("server.stats")
        # The daemon lists closed connections until its next sweep (every 2 s): let those of an
        # earlier test of this file go first.
        fr.wait_until(lambda: not ss.daemon_status().get("connections"), 20,
                      "slipstreamd listing no connection")
        server = ss.Gated(self, self.supervise(
            self.peer("server", "--port-file", port_file, "--threads", "--count", str(TOTAL),
                      "--mode", "echo", "--log", "--timeout", "120"),
            stats=True, extra=["-o", server_stats]))
        fr.read_port(port_file)
        clients = []
        for k in range(CLIENTS):
            supervise = k % 2 == 0
            cmd = ss.after_gate(self.peer(
                "client", "--port-file", port_file, "--parallel", str(PER_CLIENT),
                "--count", str(PER_CLIENT), "--mode", "echo", "--bytes", str(BYTES),
                "--chunk", "1024", "--seed", str(k * 1000), "--hold", "--log", "--timeout", "120"))
            stats = self.path(f"client{k}.stats")
            if supervise:
                cmd = self.supervise(cmd, stats=True, extra=["-o", stats])
            clients.append((ss.Gated(self, cmd), supervise, stats))
        for gated, supervise, _ in clients:
            if supervise:
                fr.wait_until(lambda: gated.pid in ss.supervisor_pids(), 20, "supervisor session")
        for gated, _, _ in clients:
            gated.go()  # all four connect at once
        ready = [[gated.ready(60) for _ in range(PER_CLIENT)] for gated, _, _ in clients]

        # The kernel's view while all 200 connections are open.
        server_pid = fr.program_pid(server.pid)
        fr.wait_until(lambda: len(fr.socket_inodes(server_pid)) >= TOTAL + 1, 30,
                      "the server holding every connection")
        unix, tcp, peers = harness.unix_inodes(), ss.tcp_inodes(), ss.unix_peers()
        server_sockets = fr.socket_inodes(server_pid)
        self.assertEqual(len(server_sockets & unix), TOTAL // 2)
        self.assertEqual(len(server_sockets & tcp), TOTAL // 2 + 1)  # and the listener
        supervised_ends = {}
        for (gated, supervise, _), ends in zip(clients, ready):
            for end in ends:
                ino = harness.fd_socket_inode(end["pid"], end["fd"])
                if supervise:
                    self.assertIn(ino, unix, end)
                    self.assertNotIn(ino, tcp, end)
                    if peers is not None:
                        self.assertIn(peers.get(ino), server_sockets, end)
                    supervised_ends[ino] = end
                else:
                    self.assertIn(ino, tcp, end)
                    self.assertNotIn(ino, unix, end)
        status = ss.daemon_status()
        self.assertEqual(status["connections_total"], TOTAL // 2)
        listed = {c["client_unix_inode"]: c for c in status["connections"]}
        self.assertEqual(set(listed), set(supervised_ends))
        for ino, end in supervised_ends.items():
            self.assertEqual(listed[ino]["client"], ss.canonical(end["local"]))
            self.assertIn(listed[ino]["server_unix_inode"], server_sockets)

        # Every connection's own bytes, both ways.
        for gated, _, _ in clients:
            gated.go()
        sent = {}
        for k, (gated, supervise, stats) in enumerate(clients):
            code, out, err = gated.finish(120)
            self.assertEqual(code, 0, err[:10])
            self.assertEqual(ss.summary(out, "client"),
                             f"client: mode=echo connections={PER_CLIENT} "
                             f"bytes_out={PER_CLIENT * BYTES} bytes_in={PER_CLIENT * BYTES} "
                             "errors=0")
            for record in ss.conn_lines(out):
                self.assertEqual(record["crc_in"], record["crc_out"], record)
                sent[record["local"]] = record
            if supervise:
                counts = ss.read_stats(stats)
                self.assertEqual((counts["switched"], counts["relayed"], counts["tcp"]),
                                 (PER_CLIENT, 0, 0), counts)
        self.assertEqual(len(sent), TOTAL, "every client address is distinct")
        self.assertEqual(len({r["seed"] for r in sent.values()}), TOTAL)
        code, out, err = server.finish(60)
        self.assertEqual(code, 0, err[:10])
        received = {ss.canonical(r["peer"]): r for r in ss.conn_lines(out)}
        self.assertEqual(set(received), set(sent), "the server's peers are the clients")
        for addr, record in received.items():
            self.assertEqual((record["bytes_in"], record["crc_in"]),
                             (sent[addr]["bytes_out"], sent[addr]["crc_out"]), addr)
        counts = ss.read_stats(server_stats)
        # A preloaded server accepts an unsupervised client's connection in-process when no switch
        # to its port is in flight at that moment: the library counts it, not the supervisor.
        in_process = counts["preload_tcp_accepts"]
        self.assertEqual((counts["accepts"] + in_process, counts["switched"],
                          counts["tcp"] + in_process), (TOTAL, TOTAL // 2, TOTAL // 2), counts)
        self.assert_hybrid_used()


class DynamicConcurrentMix(ConcurrentMix):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

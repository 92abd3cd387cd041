#!/usr/bin/env python3
"""Every byte crosses a switched connection exactly once and in order, in both directions.

Supervised client/server pairs (static C, dynamically linked C, Go, Python blocking and asyncio,
and mixed pairs) move
1 B, 1 KiB, 64 KiB, 1 MiB and 64 MiB (C and Go; Python up to 1 MiB): echoed back chunk by chunk
and compared (both directions), sunk with a half-close (shutdown(SHUT_WR), then the server's
"<count> <crc32>" reply is read), sourced by a server that speaks first, and 10 000
request/response round trips; over IPv4, IPv6 and v4-mapped addresses. Each connection is proven switched (the client's --stats and the
server's) and the CRC-32 each side computed of what it sent must equal what the other side
computed of what it received. The dynamically linked programs (C and CPython) run in hybrid
mode, which their --stats must show (calls served in-process by libslipstream-preload.so).
"""

import zlib

import fixture_runs as fr
import harness
import switch_support as ss

SIZES = (1, 1 << 10, 1 << 16, 1 << 20, 1 << 26)
ROUNDS = 10000


class SwitchedData(fr.FixtureTest):

    def serve(self, lang, mode, count, *, family="ipv4", size=0, seed=0):
        """Starts a supervised server for `count` connections; returns (Gated, port file)."""
        self.servers = getattr(self, "servers", 0) + 1
        self.server_lang = lang
        port_file = self.path(f"port.{self.servers}")
        stats = self.server_stats = self.path(f"server.{self.servers}.stats")
        server = ss.Gated(self, harness.supervised(
            ss.PEERS[lang]("server", "--family", family, "--port-file", port_file,
                           "--count", str(count), "--mode", mode, "--bytes", str(size),
                           "--seed", str(seed), "--log"), stats=True, extra=["-o", stats]))
        fr.read_port(port_file)
        return server, port_file

    def connect(self, lang, port_file, mode, *, host="127.0.0.1", size=0, seed=0, rounds=0):
        """Runs one supervised client connection; returns its conn record (dict)."""
        stats = self.path("client.stats")
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ss.PEERS[lang]("client", "--host", host, "--port-file", port_file, "--mode", mode,
                           "--bytes", str(size), "--chunk", "65536", "--seed", str(seed),
                           "--rounds", str(rounds), "--log")), stats=True, extra=["-o", stats]))
        client.start_program()
        code, out, err = client.finish(timeout=120)
        sent = {"echo": size, "sink": size, "source": 0, "rr": 16 * rounds}[mode]
        received = {"echo": size, "sink": None, "source": size, "rr": 16 * rounds}[mode]
        lines = ss.program_lines(out)
        self.assertEqual(code, 0, f"{lang} client {mode} {size}: {err}")
        self.assertEqual(len(lines), 2, lines)
        summary = ss.summary(lines, "client")
        self.assertRegex(summary, rf"^client: mode={mode} connections=1 bytes_out={sent} "
                                  rf"bytes_in=\d+ errors=0$")
        record = ss.conn_lines(lines)[0]
        if received is not None:
            self.assertEqual(int(record["bytes_in"]), received, record)
        if mode == "echo":
            self.assertEqual(record["crc_in"], record["crc_out"])
        stats_counts = ss.read_stats(stats)
        self.assertEqual((stats_counts["switched"], stats_counts["tcp"]), (1, 0),
                         f"{lang} client {mode} {size} must be switched: {stats_counts}")
        self.check_hybrid(lang, stats)
        return record

    def finish_server(self, server, count):
        code, out, err = server.finish()
        self.assertEqual(code, 0, err)
        self.assertRegex(ss.summary(out, "server"), rf"connections={count} .* errors=0$")
        stats = ss.read_stats(self.server_stats)
        self.assertEqual((stats["accepts"], stats["switched"], stats["tcp"]), (count, count, 0),
                         stats)
        self.check_hybrid(self.server_lang, self.server_stats)
        return {ss.canonical(c["peer"]): c for c in ss.conn_lines(out)}

    def check_hybrid(self, lang, stats):
        """Dynamically linked programs ran in hybrid mode (their socket() served in-process)."""
        served = ss.preload_in_process(stats, "socket")
        if lang in ss.DYNAMIC_PEERS:
            self.assertGreaterEqual(served, 1, f"{lang}: no hybrid mode in {stats}")
        else:
            self.assertEqual(served, 0, f"{lang}: {stats}")

    def check_upstream(self, client_records, server_records):
        """What each client sent is what the server received from that client's address."""
        for c in client_records:
            s = server_records[ss.canonical(c["local"])]
            self.assertEqual((s["bytes_in"], s["crc_in"]), (c["bytes_out"], c["crc_out"]),
                             f"client {c} vs server {s}")

    def echo_sink_source(self, server_lang, client_lang, sizes, *, family="ipv4",
                         host="127.0.0.1"):
        for mode in ("echo", "sink"):
            server, port_file = self.serve(server_lang, mode, len(sizes), family=family)
            records = [self.connect(client_lang, port_file, mode, host=host, size=n, seed=i)
                       for i, n in enumerate(sizes)]
            self.check_upstream(records, self.finish_server(server, len(sizes)))
        for i, n in enumerate(sizes):
            server, port_file = self.serve(server_lang, "source", 1, family=family, size=n,
                                           seed=100 + i)
            self.connect(client_lang, port_file, "source", host=host, size=n, seed=100 + i)
            self.finish_server(server, 1)

    def round_trips(self, server_lang, client_lang, *, family="ipv4", host="127.0.0.1"):
        server, port_file = self.serve(server_lang, "rr", 1, family=family)
        record = self.connect(client_lang, port_file, "rr", host=host, rounds=ROUNDS)
        self.assertEqual(record["crc_in"], responses_crc(ROUNDS))
        self.check_upstream([record], self.finish_server(server, 1))

    # Static C: every size, every mode, every family.
    def test_c_ipv4_sizes(self):
        self.echo_sink_source("c", "c", SIZES)

    def test_c_ipv4_round_trips(self):
        self.round_trips("c", "c")

    def test_c_ipv6(self):
        self.echo_sink_source("c", "c", (1, 1 << 20, 1 << 26), family="ipv6", host="::1")
        self.round_trips("c", "c", family="ipv6", host="::1")

    def test_c_v4mapped(self):
        self.echo_sink_source("c", "c", (1, 1 << 20, 1 << 26), family="v4mapped")
        self.round_trips("c", "c", family="v4mapped")

    # Dynamically linked C (hybrid mode).
    def test_c_dyn_sizes_and_round_trips(self):
        self.echo_sink_source("c_dyn", "c_dyn", SIZES)
        self.round_trips("c_dyn", "c_dyn")

    def test_c_dyn_ipv6_and_v4mapped(self):
        self.echo_sink_source("c_dyn", "c_dyn", (1 << 20,), family="ipv6", host="::1")
        self.echo_sink_source("c_dyn", "c_dyn", (1 << 20,), family="v4mapped")
        self.round_trips("c_dyn", "c_dyn", family="v4mapped", host="::ffff:127.0.0.1")

    # Go.
    def test_go_sizes_and_round_trips(self):
        self.echo_sink_source("go", "go", SIZES)
        self.round_trips("go", "go")

    def test_go_ipv6(self):
        self.echo_sink_source("go", "go", (1 << 20,), family="ipv6", host="::1")

    # Python (sizes up to 1 MiB: the interpreter, not the connection, is the slow part).
    def test_both_sides_write_before_reading(self):
        """3 MiB each way before either side reads: TCP on loopback holds that much (tcp_wmem's
        4 MiB), and so must a switched connection, static and dynamic, or both writers block
        forever (a default AF_UNIX socketpair holds about 200 KB; docs/differences.md)."""
        size = 3 << 20
        for program in ("both_write", "both_write_dyn"):
            port_file = self.path(f"port.{program}")
            cmd = lambda role: [harness.program(program), role, "--port-file", port_file,
                                "--bytes", str(size)]
            stats = (self.path(f"{program}.server.stats"), self.path(f"{program}.client.stats"))
            for supervise in (False, True):
                server, client, _ = fr.run_client_server(
                    self, cmd("server"), cmd("client"), port_file, supervise=supervise,
                    timeout=30, server_timeout=30, server_stats=stats[0], client_stats=stats[1])
                for role, (code, out, err) in (("client", client), ("server", server)):
                    self.assertEqual((code, ss.program_lines(out)), (0, [f"{role} read {size} ok"]),
                                     (program, supervise, err))
            for path in stats:
                self.assertEqual(ss.read_stats(path)["switched"], 1, open(path).read())

    def test_python_blocking(self):
        self.echo_sink_source("py", "py", (1, 1 << 16, 1 << 20))
        self.round_trips("py", "py")

    def test_python_asyncio(self):
        self.echo_sink_source("asyncio", "asyncio", (1, 1 << 16, 1 << 20))
        self.round_trips("asyncio", "asyncio")

    def test_python_asyncio_v4mapped(self):
        self.echo_sink_source("asyncio", "asyncio", (1 << 20,), family="v4mapped")

    # Mixed languages: the protocol is one.
    def test_mixed_pairs(self):
        for server_lang, client_lang in (("go", "c"), ("c", "py"), ("asyncio", "go"),
                                         ("py", "asyncio"), ("c", "c_dyn"), ("c_dyn", "c"),
                                         ("c_dyn", "go"), ("py", "c_dyn")):
            with self.subTest(server=server_lang, client=client_lang):
                self.echo_sink_source(server_lang, client_lang, (1 << 20,))


def responses_crc(rounds):
    """CRC-32 of the responses "rsp %011d\\n" for 0..rounds-1, as the clients compute it."""
    crc = 0
    for i in range(rounds):
        crc = zlib.crc32(f"rsp {i:011d}\n".encode(), crc)
    return f"{crc:08x}"


if __name__ == "__main__":
    fr.main()

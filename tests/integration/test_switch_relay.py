#!/usr/bin/env python3
"""A listener shared by a supervised and an unsupervised process: connections the unsupervised
one accepts are relayed by the client's supervisor, byte for byte.

The test process itself is the unsupervised parent: it creates the listening socket and starts
a supervised child (switch_peer server --listen-fd) that accepts on it. The child's first
accept() registers the listener, so a supervised client's connects are switched. The child
serves the first K connections and then stays alive without accepting; the parent accepts the
rest. Those have their server end waiting in the child's supervisor, unclaimed: the client's
supervisor must relay between the AF_UNIX end and the TCP connection the parent accepted. Every
connection's bytes must be right both ways (echo with half-close; and the parent speaking
first), the client's --stats must count them as relayed, and the daemon's status too.
DynamicRelay runs the supervised child and client as switch_peer_dyn, in hybrid mode.
"""

import importlib.util
import socket
import threading
import zlib

import fixture_runs as fr
import harness
import switch_support as ss

K, N = 3, 8


def load_stream():
    """The Stream class of tests/programs/py/switch_peer.py (the fixtures' byte stream)."""
    spec = importlib.util.spec_from_file_location("switch_peer", ss.PY_PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Stream


class ParentServer:
    """Accepts `count` connections on `listener` once started, each on its own thread: echoes
    until EOF, or sends `size` bytes of the stream of `seed` and then half-closes and waits for
    the client's EOF (source) or closes at once (source-close)."""

    def __init__(self, listener, count, mode, size=0, seed=0):
        self.listener, self.count, self.mode, self.size, self.seed = (listener, count, mode,
                                                                      size, seed)
        self.received = {}  # peer address -> (bytes, crc32)
        self.errors = []
        self.threads = []

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.listener.settimeout(20)
        for _ in range(self.count):
            try:
                conn, addr = self.listener.accept()
            except OSError as e:
                self.errors.append(f"accept: {e}")
                break
            t = threading.Thread(target=self.serve, args=(conn, addr), daemon=True)
            t.start()
            self.threads.append(t)
        for t in self.threads:
            t.join(60)

    def serve(self, conn, addr):
        try:
            with conn:
                conn.settimeout(20)
                total, crc = 0, 0
                if self.mode in ("source", "source-close"):
                    conn.sendall(load_stream()(self.seed).bytes(0, self.size))
                    if self.mode == "source":
                        # Half-close, and keep the socket until the client is done.
                        conn.shutdown(socket.SHUT_WR)
                        while conn.recv(1 << 16):
                            pass
                    self.received[f"{addr[0]}:{addr[1]}"] = (0, "00000000")
                    return
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    total += len(data)
                    crc = zlib.crc32(data, crc)
                    conn.sendall(data)
                self.received[f"{addr[0]}:{addr[1]}"] = (total, f"{crc:08x}")
        except OSError as e:
            self.errors.append(f"{addr}: {e}")

    def join(self):
        self.thread.join(60)
        return not self.thread.is_alive()


class Relay(fr.FixtureTest):
    PEER = staticmethod(ss.c_peer)

    def run_shared(self, mode, size, parent_mode=None):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        child_stats, client_stats = self.path("child.stats"), self.path("client.stats")
        child = ss.Gated(self, harness.supervised(
            self.PEER("server", "--listen-fd", str(listener.fileno()), "--count", str(K),
                      "--mode", mode, "--bytes", str(size), "--seed", "5", "--log",
                      "--hold-exit"), stats=True, extra=["-o", child_stats]),
            pass_fds=(listener.fileno(),))
        # The child's first accept() registers the shared listener as supervised.
        fr.wait_until(lambda: any(l["address"] == f"127.0.0.1:{port}"
                                  for l in ss.daemon_status().get("listeners", [])),
                      20, "the shared listener registered by the child's accept")
        parent = ParentServer(listener, N - K, parent_mode or mode, size, 5)
        relays_before = ss.daemon_status()["relays_total"]
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            self.PEER("client", "--port", str(port), "--count", str(N), "--mode", mode,
                      "--bytes", str(size), "--seed", "5", "--log", "--timeout", "30")),
            stats=True, extra=["-o", client_stats]))
        client.start_program()
        child.wait_line(r"^done ", 60)  # K served; the child stays, no longer accepting
        parent.start()
        code, out, err = client.finish(60)
        self.assertEqual(code, 0, err)
        self.assertTrue(parent.join(), "the parent served its connections")
        self.assertEqual(parent.errors, [])
        bytes_out = size * N if mode == "echo" else 0
        self.assertEqual(ss.summary(out, "client"),
                         f"client: mode={mode} connections={N} bytes_out={bytes_out} "
                         f"bytes_in={size * N} errors=0")
        records = {r["local"]: r for r in ss.conn_lines(out)}
        child_code, child_out, child_err = child.finish(30)
        self.assertEqual(child_code, 0, child_err)
        self.assertRegex(ss.summary(child_out, "server"), rf"connections={K} .*errors=0$")
        by_child = {ss.canonical(r["peer"]): r for r in ss.conn_lines(child_out)}
        self.assertEqual(len(parent.received), N - K)
        self.assertEqual(set(by_child) | set(parent.received), set(records),
                         "every client connection reached the child or the parent")
        if mode == "echo":
            for addr, (total, crc) in parent.received.items():
                self.assertEqual((str(total), crc),
                                 (records[addr]["bytes_out"], records[addr]["crc_out"]), addr)
            for addr, r in by_child.items():
                self.assertEqual((r["bytes_in"], r["crc_in"]),
                                 (records[addr]["bytes_out"], records[addr]["crc_out"]), addr)
            for r in records.values():
                self.assertEqual(r["crc_in"], r["crc_out"], r)
        counts = ss.read_stats(client_stats)
        self.assertEqual((counts["switched"], counts["relayed"], counts["tcp"]), (N, N - K, 0),
                         counts)
        counts = ss.read_stats(child_stats)
        self.assertEqual((counts["accepts"], counts["switched"]), (K, K), counts)
        self.assertGreaterEqual(ss.daemon_status()["relays_total"] - relays_before, N - K)
        if self.PEER is ss.c_dyn_peer:  # hybrid mode: the library served calls in-process
            for path in (client_stats, child_stats):
                self.assertGreaterEqual(ss.preload_in_process(path, "socket"),
                                        N if path == client_stats else 0, path)
                self.assertTrue(ss.preload_counts(path), f"{path}: nothing served in-process")

    def test_echo_both_ways(self):
        self.run_shared("echo", 1 << 20)

    def test_parent_speaks_first(self):
        """The server side writes first, half-closes, and closes once the client is done; the
        client checks the stream."""
        self.run_shared("source", 1 << 20)

    # Regression: when the parent wrote 1 MiB and closed at once, its orphaned end (inode 0) was
    # taken for a connection still in the accept queue, never relayed, and the client hung.
    # Checks that an orphaned end is relayed and the client receives the whole stream.
    def test_parent_speaks_first_and_closes_at_once(self):
        self.run_shared("source", 1 << 20, parent_mode="source-close")


class DynamicRelay(Relay):
    PEER = staticmethod(ss.c_dyn_peer)


if __name__ == "__main__":
    fr.main()

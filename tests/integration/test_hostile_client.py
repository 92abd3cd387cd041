#!/usr/bin/env python3
"""A hostile local client speaks the daemon protocol directly (issue #12, point 4), while real
supervised client/server pairs keep switching.

HostileClient: a supervised echo server, four supervised connections held open, and two
supervised clients that connect, echo 16 KiB and close for 20 s, run while a process of the same
user, with its own sessions on slipstreamd's socket:
claims a connection it does not hold; asks for the TCP socket of every live pair (kAdopt) by
inode, as slipstreamd --status lists them, and replays kInstalled/kDisown/kAbort/kPeerPid with
those inodes; replays a client's kIntent/kConnected on a TCP connection of its own, twice;
floods 10 000 bogus messages (random types, bodies and headers) without reading; sends truncated
and oversized messages, and SCM_RIGHTS with kMaxFds, kMaxFds + 1 ... and 253 fds (SCM_MAX_FD);
opens sessions that close with messages in flight. Every message it receives is checked: no
socket at all may reach it. Then: every client connection was switched and echoed byte-exact
(the server's per-connection log equals the clients' as a multiset of address, bytes and CRC-32),
slipstreamd is the same process, its fd count is back where it was and its RSS grew < 32 MiB.

OtherUser: a process of uid nobody cannot reach root's daemon: the runtime directory is 0700
(connect() fails with EACCES); with the directory and socket opened up on purpose, the daemon
itself refuses it (SO_PEERCRED: a kError EACCES saying why, then the close) while serving root's
own.

ConnectAddressFlip: a thread rewrites the sockaddr of a connect() in flight between a supervised
listener (A) and another server (B, unsupervised; then supervised as well). Every connection
reaches the server that getpeername() names (the supervisor connects with the address it read,
or lets the kernel run the call): no case where the supervisor paired with A while the program is
connected to B.
"""

import errno
import os
import collections
import random
import socket
import struct
import sys
import subprocess
import threading
import time
import unittest

import fixture_runs as fr
import harness
import switch_support as ss

MAGIC, VERSION, HEADER = 0x53504C53, 1, struct.Struct("<IHHQiI")
MAX_BODY, MAX_FDS, SCM_MAX_FD = 256 * 1024, 2, 253
T = dict(register=1, intent=2, connected=3, abort=4, claim=5, installed=6, status=7, disown=8,
         hello=9, adopt=10, sweep=11, peer_pid=12, claim_reply=102, adopt_reply=106,
         status_reply=103, error=104)
CLIENTS, PER_CLIENT, BYTES = 2, 100, 65536


def message(msg_type, body=b"", seq=1, pid=0):
    return HEADER.pack(MAGIC, VERSION, msg_type, seq, pid, len(body)) + body


class Session:
    """A raw session on slipstreamd's socket. Every message read is checked by `on_fds`."""

    def __init__(self, on_fds):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(os.path.join(harness.RUNTIME_DIR, "matcher.sock"))
        self.on_fds = on_fds

    def send(self, data, fds=()):
        if fds:
            return socket.send_fds(self.sock, [data], list(fds))
        return self.sock.send(data)

    def receive(self, timeout=5.0):
        """(type, seq, body, fds) of the next message, or None on timeout/EOF."""
        self.sock.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_BODY + 64, 300)
        except (socket.timeout, BlockingIOError):
            return None
        if not data:
            return None
        self.on_fds(fds)
        magic, version, msg_type, seq, _, body_len = HEADER.unpack_from(data)
        return msg_type, seq, data[HEADER.size:HEADER.size + body_len], fds

    def until(self, msg_type, seq=None, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.receive(max(0.1, deadline - time.monotonic()))
            if m and m[0] == msg_type and (seq is None or m[1] == seq):
                return m
        return None

    def drain(self):
        got = []
        while (m := self.receive(0.2)) is not None:
            got.append(m)
        return got

    def close(self):
        self.sock.close()


def socket_kind(fd):
    """(family, type) of a received fd, or None when it is no socket."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return s.family, s.type
    finally:
        s.close()


class HostileBase(ss.EvidenceMixin, fr.FixtureTest):

    def setUp(self):
        super().setUp()
        self.received = []  # (family, type) of every fd the hostile client was handed

    def on_fds(self, fds):
        for fd in fds:
            self.received.append(socket_kind(fd))
            os.close(fd)

    def start_server(self, count=0):
        port_file = self.path("port")
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, "--threads", "--count", str(count),
                      "--mode", "echo", "--log", "--timeout", "180")))
        port = fr.read_port(port_file)
        fr.wait_until(lambda: server.pid in ss.supervisor_pids(), 20, "server's supervisor")
        return server, port

    def daemon_pid(self):
        return ss.daemon_status()["pid"]


class OwnListener:
    """An unsupervised TCP listener of the hostile process: its own connections go there."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()


class HostileClient(HostileBase):
    DURATION = 20  # seconds of client load, longer than the attack

    def test_hostile_client_while_pairs_switch(self):
        server, port = self.start_server()
        daemon = self.daemon_pid()
        probe = Session(self.on_fds)  # an idle session: the daemon's fds with one session
        probe.drain()
        fds_before, rss_before = ss.fd_count(daemon), ss.rss_kib(daemon)

        # Four pairs held open through the attack (its targets), and two clients that connect,
        # echo 16 KiB and close, over and over, meanwhile.
        holder = ss.Gated(self, harness.supervised(
            ss.c_peer("client", "--port", str(port), "--count", "4", "--parallel", "4", "--mode",
                      "echo", "--bytes", "65536", "--seed", "9000", "--hold", "--log")))
        held = [holder.ready(30) for _ in range(4)]
        for h in held:  # switched: an AF_UNIX fd in the program, listed by the daemon
            ino = harness.fd_socket_inode(h["pid"], h["fd"])
            self.assertIn(ino, harness.unix_inodes())
            ss.status_connection(ino)
        clients = []
        for k in range(2):
            stats = self.path(f"client{k}.stats")
            cmd = harness.supervised(
                ss.c_peer("client", "--port", str(port), "--count", "0", "--duration",
                          str(self.DURATION), "--mode", "echo", "--bytes", "16384", "--chunk",
                          "4096", "--seed", str(100000 * (k + 1)), "--log", "--timeout", "180"),
                stats=True, extra=["-o", stats])
            clients.append((self.start(cmd), stats))

        counts = self.hostile()

        code, h_out, h_err = holder.finish(60)
        self.assertEqual(code, 0, h_err[-10:])
        results = [(c.wait(180), stats) for c, stats in clients]
        expected = ss.conn_lines(h_out)
        for (c_code, c_out, c_err), stats in results:
            self.assertEqual(c_code, 0, f"client: {c_err[-20:]}")
            summary = ss.summary(c_out, "client")
            self.assertIn("errors=0", summary)
            conns = ss.conn_lines(c_out)
            self.assertGreater(len(conns), 20, summary)
            got = ss.read_stats(stats)
            self.assertEqual(got["switched"], len(conns), f"{stats}: {got}")
            expected += conns
        # The server saw each client connection (its peer is the client's local address) and got,
        # byte for byte, what the client sent; each client got it back (crc_in == crc_out). As
        # multisets: a port may be reused over thousands of connections.
        for c in expected:
            self.assertEqual(c["crc_in"], c["crc_out"], c)
        want = collections.Counter((ss.canonical(c["local"]), c["bytes_out"], c["crc_out"])
                                   for c in expected)

        def seen():
            return collections.Counter((ss.canonical(c["peer"]), c["bytes_in"], c["crc_in"])
                                       for c in ss.conn_lines(server.out.snapshot()))
        try:
            fr.wait_until(lambda: sum(seen().values()) >= len(expected), 30,
                          f"the server logging {len(expected)} connections")
        except TimeoutError:
            self.fail(f"server logged {sum(seen().values())} of {len(expected)} connections; "
                      f"missing e.g. {list((want - seen()).items())[:5]}")
        self.assertEqual(seen(), want, "connections the server and the clients disagree on")

        # Nothing was handed to the hostile client: no socket end and no TCP socket of anyone.
        self.assertEqual(self.received, [], "the hostile client was handed fds")
        self.assertGreaterEqual(counts["errors"], 10000, counts)
        self.assertEqual(self.daemon_pid(), daemon, "slipstreamd restarted")
        probe.close()
        server.kill()
        fr.wait_until(lambda: ss.fd_count(daemon) <= fds_before, 20,
                      f"slipstreamd's fds back to {fds_before} (now {ss.fd_count(daemon)})")
        # 10 000 unread error replies and 253-fd messages leave no lasting cost.
        if os.environ.get("SLIPSTREAM_SANITIZED", "0") != "1":
            # AddressSanitizer keeps freed memory in quarantine: RSS says nothing there.
            self.assertLess(ss.rss_kib(daemon) - rss_before, 32 * 1024)

    def hostile(self):
        counts = {"errors": 0}
        rng = random.Random(12)
        s = Session(self.on_fds)
        s.drain()
        listener = OwnListener()
        self.addCleanup(listener.close)

        def count_errors():
            counts["errors"] += sum(1 for m in s.drain() if m[0] == T["error"])

        # 1. Requests naming the live pairs by inode (as slipstreamd --status lists them): the
        # TCP socket of a pair (kAdopt, with no end or with an end of our own), and the
        # verdicts that belong to their supervisors.
        live = ss.daemon_status().get("connections", [])
        self.assertTrue(live, "no live pair to attack")
        for c in live:
            for ino in (c["client_unix_inode"], c["server_unix_inode"]):
                body = struct.pack("<Q", ino)
                for t in ("adopt", "installed", "disown", "abort", "peer_pid"):
                    s.send(message(T[t], body, seq=500))
                a, b = socket.socketpair()
                s.send(message(T["adopt"], body, seq=501), [a.fileno()])
                a.close()
                b.close()
        count_errors()
        with socket.create_connection(("127.0.0.1", listener.port)) as own:
            # 2. A claim of a connection it does not hold the server side of: "no", nothing
            # handed out.
            s.send(message(T["claim"], seq=502), [own.fileno()])
            reply = s.until(T["claim_reply"], 502)
            self.assertIsNotNone(reply)
            self.assertEqual(reply[2][:1], b"\0")
            # 3. A client supervisor's messages replayed on a connection of its own, twice.
            for _ in range(2):
                a, b = socket.socketpair()
                s.send(message(T["intent"], bytes(8), seq=503), [own.fileno()])
                s.send(message(T["connected"], struct.pack("<QB7x", os.fstat(a.fileno()).st_ino,
                                                           0), seq=504),
                       [own.fileno(), b.fileno()])
                a.close()
                b.close()
        count_errors()

        # 4. A flood of 10 000 bogus messages, read only when the socket is full.
        s.sock.setblocking(False)
        flood = []
        for i in range(10000):
            kind = rng.randrange(4)
            body = rng.randbytes(rng.randrange(0, 64))
            if kind == 0:
                data = message(rng.choice([0, 13, 99, 104, 205, 999, 65535]), body, seq=i)
            elif kind == 1:
                data = HEADER.pack(rng.getrandbits(32), VERSION, 7, i, 0, len(body)) + body
            elif kind == 2:
                data = HEADER.pack(MAGIC, VERSION, T["installed"], i, 0, len(body) + 1) + body
            else:
                data = message(rng.choice([T["installed"], T["abort"], T["peer_pid"]]), body[:7],
                               seq=i)
            flood.append(data)
        sent = 0
        while sent < len(flood):
            try:
                s.sock.send(flood[sent])
                sent += 1
            except BlockingIOError:
                count_errors()
        s.sock.setblocking(True)
        count_errors()

        # 5. Truncated and oversized messages.
        s.sock.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE (root), else ignored
        for data in (b"", b"S", message(T["status"])[:HEADER.size - 1],
                     HEADER.pack(MAGIC, VERSION, T["status"], 1, 0, 100),
                     message(T["status"], bytes(MAX_BODY + 1)),
                     message(T["status"], bytes(MAX_BODY))):
            try:
                s.send(data)
            except OSError:
                pass  # larger than the socket buffer: the kernel refuses it (EMSGSIZE)

        # 6. Fds: kMaxFds, one more, ... and SCM_MAX_FD of them, on a message that takes none.
        pipes = [os.pipe() for _ in range((SCM_MAX_FD + 1) // 2)]
        pool = [fd for p in pipes for fd in p][:SCM_MAX_FD]
        for n in (MAX_FDS, MAX_FDS + 1, 4, 5, 6, 64, SCM_MAX_FD):
            s.send(message(T["status"], seq=600 + n), pool[:n])
        for p in pipes:
            os.close(p[0])
            os.close(p[1])
        count_errors()

        # 7. Sessions that disconnect with requests in flight (and one mid-flood).
        for i in range(50):
            d = Session(self.on_fds)
            d.send(message(T["status"], seq=i))
            with socket.create_connection(("127.0.0.1", listener.port)) as own:
                d.send(message(T["claim"], seq=i), [own.fileno()])
            d.close()
        d = Session(self.on_fds)
        for i in range(2000):
            try:
                d.sock.send(message(999, bytes(32), seq=i), socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        d.close()

        # Still answering this session, in order.
        s.send(message(T["status"], seq=777))
        self.assertIsNotNone(s.until(T["status_reply"], 777), "no status reply after the attack")
        count_errors()
        s.close()
        return counts


class OtherUser(HostileBase):

    def test_other_uid_is_refused(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to act as another user")
        server, _ = self.start_server()
        daemon = self.daemon_pid()
        sock_path = os.path.join(harness.RUNTIME_DIR, "matcher.sock")
        script = ("import socket,struct,sys\n"
                  "s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n"
                  "try:\n s.connect(sys.argv[1])\n"
                  "except OSError as e:\n print('connect', e.errno); sys.exit(0)\n"
                  "s.settimeout(5)\n"
                  "try:\n"
                  " d=s.recv(1<<20)\n"
                  " print('word', struct.unpack_from('<H',d,6)[0], struct.unpack_from('<i',d,24)[0],"
                  " 'eof' if s.recv(1<<20)==b'' else 'more')\n"
                  "except socket.timeout:\n print('timeout')\n"
                  "except OSError as e:\n print('closed', e.errno)\n")
        nobody = ["runuser", "-u", "nobody", "--", "python3", "-c", script, sock_path]
        mode = os.stat(harness.RUNTIME_DIR).st_mode & 0o777
        self.assertEqual(mode, 0o700)
        out = subprocess.run(nobody, capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout.strip(), "connect 13", out)  # EACCES: the directory
        # Opened up on purpose: the daemon's own SO_PEERCRED check refuses the session, unasked:
        # a kError (104) with EACCES, which slipstream-trace reports naming --all-users, then
        # EOF. Root's sessions go on.
        os.chmod(harness.RUNTIME_DIR, 0o755)
        os.chmod(sock_path, 0o777)
        try:
            out = subprocess.run(nobody, capture_output=True, text=True, timeout=30)
        finally:
            os.chmod(sock_path, 0o600)
            os.chmod(harness.RUNTIME_DIR, 0o700)
        self.assertEqual(out.stdout.strip(), f"word 104 {errno.EACCES} eof", out)
        self.assertEqual(self.daemon_pid(), daemon)
        server.kill()


class ConnectAddressFlip(HostileBase):
    COUNT = 400

    def flip(self, supervise_b):
        flip = harness.program("connect_flip")
        servers = {}
        for name, supervised in (("a", True), ("b", supervise_b)):
            port_file = self.path(f"port.{name}")
            cmd = [flip, "server", "--port-file", port_file, "--count", "0"]
            if supervised:
                cmd = harness.supervised(cmd, stats=True, extra=["-o", self.path(f"{name}.stats")])
            proc = self.start(cmd)
            servers[name] = (proc, fr.read_port(port_file))
            if supervised:
                fr.wait_until(lambda: proc.pid in ss.supervisor_pids(), 20, "supervisor")
        stats = self.path("client.stats")
        client = self.start(harness.supervised(
            [flip, "client", "--port-a", str(servers["a"][1]), "--port-b", str(servers["b"][1]),
             "--count", str(self.COUNT)], stats=True, extra=["-o", stats]))
        code, out, err = client.wait(180)
        self.assertEqual(code, 0, f"{out}\n{err[-3000:]}")
        fields = dict(kv.split("=") for kv in ss.summary(out, "client").split(": ", 1)[1].split())
        self.assertEqual(fields["mismatches"], "0")
        # Both servers were reached (the flip happened), and connections were switched.
        self.assertGreater(int(fields["to_a"]), 0, fields)
        self.assertGreater(int(fields["to_b"]), 0, fields)
        got = ss.read_stats(stats)
        print(f"connect_flip (B {'supervised' if supervise_b else 'unsupervised'}): {fields}, "
              f"client supervisor: {got}", file=sys.stderr)
        self.assertGreater(got["switched"], 0, got)
        if supervise_b:
            self.assertEqual(got["switched"], self.COUNT, got)
        else:
            self.assertLessEqual(got["switched"], int(fields["to_a"]), got)
        return fields, got

    def test_flip_between_supervised_and_unsupervised_server(self):
        self.flip(False)

    def test_flip_between_two_supervised_servers(self):
        self.flip(True)


if __name__ == "__main__":
    fr.main()

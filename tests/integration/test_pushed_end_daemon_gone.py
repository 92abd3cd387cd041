#!/usr/bin/env python3
"""An end pushed to the server's supervisor before slipstreamd died is installed at the accept.

docs/design.md, "The daemon dies": ends already pushed are installed as usual; the accept needs
no daemon for them. A supervised Python client connects to a supervised server that does not
accept yet, and writes one byte. Once the server end sits in the server's supervisor (kernel
evidence: that process holds the AF_UNIX peer of the client's fd), the daemon is killed, and the
server accepts 1.5 s later, past the client supervisor's 1 s look for orphaned ends. The accept
must get the pushed end: the server reads the byte, its trace says "switched to unix", and the
client's supervisor neither relays nor loses the connection.

Regression: the supervisor asked "is the daemon there?" before looking in its inbox, so the
accept got the TCP socket; the client's supervisor, seeing its end held by the server's
supervisor, dropped its copy, and the server's supervisor then closed the end: the byte was lost
and the server's read() blocked forever.
"""

import ctypes
import os
import socket
import subprocess
import time

import fixture_runs as fr
import harness
import switch_support as ss

CLIENT = r"""
import errno, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"x")
print("connected", s.fileno(), flush=True)
sys.stdin.readline()
try:
    print("recv", s.recv(1))
except OSError as e:
    print("recv", errno.errorcode[e.errno])
s.close()
"""

# Accepts when told to (one stdin line), reads one byte, closes the connection, and stays until a
# second line: the client's supervisor must then see the end installed and closed, not given up.
SERVER = harness.PY_LISTENER + r"""
sys.stdin.readline()
c, a = l.accept()
print("accept", a[0], c.recv(1), flush=True)
c.close()
sys.stdin.readline()
"""


def take_listener(pid):
    """A copy (pidfd_getfd, Linux 5.6) of the listening TCP socket of process `pid`."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
            if fd < 0:
                continue
            sock = socket.socket(fileno=fd) if harness.fd_socket_inode(pid, name) else None
            if sock is None:
                os.close(fd)
            elif sock.type == socket.SOCK_STREAM and \
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return sock
            else:
                sock.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"no listening socket in process {pid}")


class PushedEndAfterDaemonDeath(fr.FixtureTest):

    def start_pair(self, server_cmd, extra=()):
        """The supervised server (not accepting yet) and a supervised client that has connected
        and written one byte; returns (server, client, the client end's inode, server trace)."""
        port_file = self.path("port")
        server_trace = self.path("server.trace")
        server = subprocess.Popen(
            self.wrap([*server_cmd, port_file], True, trace=server_trace, extra=extra),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: server.poll() is None and server.kill())
        port = fr.read_port(port_file)
        self.client_stats = self.path("client.stats")
        client = subprocess.Popen(
            self.wrap(["python3", "-c", CLIENT, str(port)], True, stats=self.client_stats),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: client.poll() is None and client.kill())
        line = client.stdout.readline().split()
        self.assertEqual(line[:1], ["connected"], line)
        client_end = harness.fd_socket_inode(fr.program_pid(client.pid), line[1])
        self.assertIsNotNone(client_end)
        return server, client, client_end, server_trace

    def kill_daemon_after_push(self, server, client_end):
        def pushed():
            peer = (ss.unix_peers() or {}).get(client_end)
            return peer is not None and peer in fr.socket_inodes(server.pid)
        fr.wait_until(pushed, 10, "the server end pushed to the server's supervisor")
        ss.kill_daemon(self)
        time.sleep(1.5)  # past the client supervisor's orphan look (kOrphanGrace, 1 s)

    def run_case(self, extra):
        server, client, client_end, server_trace = self.start_pair(
            ["python3", "-c", SERVER], extra)
        self.kill_daemon_after_push(server, client_end)
        server.stdin.write("go\n")
        server.stdin.flush()
        self.assertEqual(server.stdout.readline(), "accept 127.0.0.1 b'x'\n")
        # The supervisor's accept, or the library's late claim (a trapped getsockopt). Its record
        # is written after the answer: the program may have printed before it.
        def accepts():
            return [r for r in harness.read_trace(server_trace)
                    if r["call"] in ("accept", "accept4", "getsockopt")]
        fr.wait_until(accepts, 10, "the accept traced")
        records = harness.read_trace(server_trace)
        switched = [r for r in accepts() if "switched to unix" in (r["note"] or "")]
        self.assertEqual(len(switched), 1, records)
        # The server closed the connection and lives on. The client's supervisor looks again
        # each second: the end is in no program now, and must not be relayed (that would keep
        # the connection open: the client's recv would wait forever instead of reading EOF).
        time.sleep(2.5)
        out, err = client.communicate("\n", timeout=20)
        self.assertEqual((client.returncode, out.splitlines()), (0, ["recv b''"]), err)
        counts = ss.read_stats(self.client_stats)
        self.assertEqual((counts["switched"], counts["relayed"]), (1, 0), counts)
        server.communicate("\n", timeout=20)
        self.assertEqual(server.returncode, 0)

    def test_accepted_by_an_unsupervised_process(self):
        """Regression: the client's supervisor took an end held only by the server's supervisor
        for claimed and dropped its copy; when that supervisor then gave the end up (the
        connection was accepted by a process it does not supervise, sharing the listener), the
        byte the client had written went with it and the acceptor waited for it forever. Now the
        client's supervisor looks again until the end is in a program, or nowhere: then it relays
        and the byte arrives over TCP."""
        server, client, client_end, _ = self.start_pair(
            [harness.program("accept_later"), "--port-file"])
        self.kill_daemon_after_push(server, client_end)
        listener = take_listener(fr.program_pid(server.pid))
        self.addCleanup(listener.close)
        listener.settimeout(10)
        conn, _ = listener.accept()  # this test process: not supervised
        self.addCleanup(conn.close)
        conn.settimeout(10)
        self.assertEqual(conn.recv(1), b"x")
        conn.sendall(b"y")
        conn.close()
        out, err = client.communicate("\n", timeout=20)
        self.assertEqual((client.returncode, out.splitlines()), (0, ["recv b'y'"]), err)
        counts = ss.read_stats(self.client_stats)
        self.assertEqual((counts["switched"], counts["relayed"]), (1, 1), counts)
        server.communicate("", timeout=20)  # EOF: it exits without accepting

    def test_supervisor_path_accept(self):
        self.run_case(["--no-preload"])

    def test_in_process_accept(self):
        """The preloaded server accepts in-process and claims late: the pushed end keeps the
        port's `switching` gate raised, so the claim reaches the supervisor's inbox."""
        self.run_case([])


if __name__ == "__main__":
    fr.main()

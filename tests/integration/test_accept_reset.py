#!/usr/bin/env python3
"""accept() of a connection that its peer reset while it waited in the queue.

Linux hands such a connection out: accept() returns a socket (with the peer's address) and the
first read() reports ECONNRESET. The peer here is the test itself, outside supervision, so the
connection stays TCP; the reset is proven processed (the connection has left /proc/net/tcp)
before the program is told to accept.
"""

import os
import socket
import struct
import subprocess

import fixture_runs as fr
import harness


def tcp_entry_exists(local_port, remote_port):
    """Is there a /proc/net/tcp socket with this local and remote port on 127.0.0.1?"""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                return True
    return False


class AcceptResetConnection(fr.FixtureTest):

    def run_case(self, supervise, null_addr):
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        cmd = [harness.program("accept_later"), "--port-file", port_file]
        if null_addr:
            cmd.append("--null-addr")
        proc = subprocess.Popen(self.wrap(cmd, supervise), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        port = fr.read_port(port_file)
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        client_port = peer.getsockname()[1]
        fr.wait_until(lambda: tcp_entry_exists(port, client_port), 10, "the queued connection")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # RST
        fr.wait_until(lambda: not tcp_entry_exists(port, client_port), 10,
                      "the reset reaching the queued connection")
        out, err = proc.communicate("go\n", timeout=20)
        return proc.returncode, out.splitlines(), err

    def check(self, null_addr):
        native = self.run_case(False, null_addr)
        peer = "-" if null_addr else "127.0.0.1"
        self.assertEqual(native[:2], (0, [f"accept: fd peer={peer} read=-1 ECONNRESET"]))
        supervised = self.run_case(True, null_addr)
        self.assertRunsAlike(native, supervised, "accept of a reset connection")

    # Regression: the supervisor's getpeername() on a freshly accepted socket failed with ENOTCONN
    # once a reset had closed it, so the accept failed with ECONNABORTED and the connection was
    # dropped. Both tests check that accepting a reset connection, with or without an address,
    # behaves as it does natively.
    def test_with_address(self):
        self.check(False)

    def test_without_address(self):
        self.check(True)


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""epoll registrations made before connect() follow the socket to its AF_UNIX end.

tests/programs/c/switch_epoll.c registers its socket (EPOLLIN|EPOLLOUT|EPOLLRDHUP, level- or
edge-triggered, data = a magic number) and then connects, non-blocking or blocking. Right after
connect() the test checks the kernel: the fd is an AF_UNIX socket, and the program's epoll
instance watches exactly that AF_UNIX socket under the fd number with the same events and data
(/proc/PID/fdinfo). The program then waits for EPOLLOUT, exchanges lines, asks epoll again
without reading (level: EPOLLIN again; edge: none), and waits for EPOLLRDHUP when the server
half-closes; its transcript must equal the native one.

DynamicEpollBeforeConnect runs the same with the dynamically linked build in hybrid mode
(libslipstream-preload.so loaded; its in-process counts prove it).
"""

import re

import fixture_runs as fr
import harness
import switch_support as ss

MAGIC = 0x5157495443480001
EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLET = 0x1, 0x4, 0x2000, 1 << 31
READY = re.compile(r"^ready client pid=(\d+) fd=(\d+) epfd=(\d+)$")
TFD = re.compile(r"^tfd:\s*(\d+) events:\s*([0-9a-f]+) data:\s*([0-9a-f]+)\s+pos:\d+ "
                 r"ino:([0-9a-f]+)", re.M)


def epoll_items(pid, epfd):
    """{fd: (events, data, inode)} of the items of epoll instance `epfd` in `pid`."""
    with open(f"/proc/{pid}/fdinfo/{epfd}") as f:
        text = f.read()
    return {int(m.group(1)): (int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
            for m in TFD.finditer(text)}


class EpollBeforeConnect(ss.HybridMixin, ss.EvidenceMixin, fr.FixtureTest):

    def run_client(self, supervise, *, edge, blocking, family="ipv4", host="127.0.0.1"):
        """Returns (client transcript, server transcript)."""
        port_file = self.path(f"port.{supervise}")
        server_cmd = [self.fixture("switch_epoll"), "server", "--family", family,
                      "--port-file", port_file]
        client_cmd = [self.fixture("switch_epoll"), "client", "--host", host,
                      "--port-file", port_file, "--hold"]
        client_cmd += (["--edge"] if edge else []) + (["--blocking-connect"] if blocking else [])
        if supervise:
            server = ss.Gated(self, self.supervise(server_cmd))
            fr.read_port(port_file)
            client = ss.Gated(self, self.supervise(ss.after_gate(client_cmd)))
            client.start_program()
        else:
            server = ss.Gated(self, server_cmd)
            fr.read_port(port_file)
            client = ss.Gated(self, client_cmd)
        pid, fd, epfd = map(int, READY.match(client.wait_line(r"^ready ")).groups())
        inode = harness.fd_socket_inode(pid, fd)
        items = epoll_items(pid, epfd)
        self.assertEqual(list(items), [fd], items)
        events, data, watched = items[fd]
        self.assertEqual(data, MAGIC, "the registration keeps its data")
        want = EPOLLIN | EPOLLOUT | EPOLLRDHUP | (EPOLLET if edge else 0)
        self.assertEqual(events & want, want, f"events {events:x}")
        self.assertEqual(watched, inode, "epoll watches the socket the fd now names")
        if supervise:
            self.assertIn(inode, harness.unix_inodes(), "the fd ends up AF_UNIX")
            self.assertNotIn(inode, ss.tcp_inodes())
        else:
            self.assertIn(inode, ss.tcp_inodes())
        client.go()
        client_result, server_result = client.finish(), server.finish()
        self.assertEqual(client_result[0], 0, client_result[2])
        self.assertEqual(server_result[0], 0, server_result[2])
        return ss.program_lines(client_result[1]), server_result[1]

    def compare(self, **kw):
        native = self.run_client(False, **kw)
        switched = self.run_client(True, **kw)
        self.assertNotIn("timeout", " ".join(native[0]), native)
        self.assertEqual(native, switched)
        self.assert_hybrid_used()

    def test_level_triggered_nonblocking_connect(self):
        self.compare(edge=False, blocking=False)

    def test_edge_triggered_nonblocking_connect(self):
        self.compare(edge=True, blocking=False)

    def test_level_triggered_blocking_connect(self):
        self.compare(edge=False, blocking=True)

    def test_edge_triggered_blocking_connect(self):
        self.compare(edge=True, blocking=True)

    def test_edge_triggered_ipv6(self):
        self.compare(edge=True, blocking=False, family="ipv6", host="::1")


class DynamicEpollBeforeConnect(EpollBeforeConnect):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

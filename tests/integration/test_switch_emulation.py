#!/usr/bin/env python3
"""A program asking about its switched socket gets the answers it would get over TCP.

tests/programs/c/switch_probe.c runs as a server and a client and prints what each can learn
about its connection: the addresses of connect and accept, getsockname/getpeername,
SO_DOMAIN/SO_PROTOCOL/SO_TYPE/SO_ERROR (also after a non-blocking connect)/SO_PEERCRED,
TCP_NODELAY and TCP_CORK set and read back, TCP_INFO (state ESTABLISHED), TCP_MAXSEG,
TCP_CONGESTION, TCP_USER_TIMEOUT, SO_KEEPALIVE/TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT (and,
section optedges, those options' edges: ranges, lengths, bad addresses, partial reads),
IP_TOS/IP_TTL or IPV6_TCLASS/IPV6_UNICAST_HOPS. The pair runs natively, then each side under its
own slipstream-trace with the connection proven switched (both fds AF_UNIX, connected to each
other); the outputs must be equal once port numbers are normalised (the n-th distinct port seen
becomes P<n>, so equal ports stay equal). IPv4, IPv6 and v4-mapped; blocking and non-blocking
connect. Then the same after the client's shutdown(SHUT_WR) (TCP_INFO states, getpeername).
"""

import re

import fixture_runs as fr
import harness
import switch_support as ss

PORT = re.compile(r"(?<=[\]\d]):(\d+)\b")

# docs/differences.md: right after shutdown(SHUT_WR) the FIN of the retained TCP connection may
# still wait for the peer's delayed ACK (no reply data carries it), so TCP_INFO can say FIN_WAIT1
# (4) where the program natively sees FIN_WAIT2 (5). Nothing else may differ.
ALSO_ACCEPTED = {
    "client shutdown: get TCP_INFO state=5 len=104": {"client shutdown: get TCP_INFO state=4 len=104"},
}


def agrees(native, switched):
    """Equal line by line, except for the documented transient states above."""
    return len(native) == len(switched) and all(
        s == n or s in ALSO_ACCEPTED.get(n, ()) for n, s in zip(native, switched))


def normalise(lines):
    """Replaces port numbers by P1, P2, ... in order of first appearance."""
    names = {}

    def rename(m):
        return ":" + names.setdefault(m.group(1), f"P{len(names) + 1}")
    return [PORT.sub(rename, line) for line in lines]


class Emulation(ss.EvidenceMixin, fr.FixtureTest):
    PROBE = "switch_probe"  # test_preload.py runs the same tests with switch_probe_dyn

    def run_probe(self, supervise, *, family="ipv4", host="127.0.0.1", nonblock=False,
                  end="shutdown", sigio=False):
        """Runs the probe pair; returns the normalised server lines followed by the client's."""
        port_file = self.path(f"port.{supervise}")
        server_cmd = [harness.program(self.PROBE), "server", "--family", family,
                      "--port-file", port_file, "--hold", "--end", end]
        client_cmd = [harness.program(self.PROBE), "client", "--host", host,
                      "--port-file", port_file, "--hold", "--end", end] + (
                          ["--nonblock"] if nonblock else []) + (["--sigio"] if sigio else [])
        if supervise:
            server = ss.Gated(self, harness.supervised(server_cmd))
            fr.read_port(port_file)
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd)))
            client.start_program()
        else:
            server = ss.Gated(self, server_cmd)
            fr.read_port(port_file)
            client = ss.Gated(self, client_cmd)
        c, s = client.ready(), server.ready()
        if supervise:
            self.assert_switched(c, s)
        else:
            self.assert_on_tcp(c)
            self.assert_on_tcp(s)
        client.go()
        server.go()
        client_result = client.finish()
        server.go()  # the server closes once the client has looked at its socket
        server_result = server.finish()
        self.assertEqual(client_result[0], 0, client_result[2])
        self.assertEqual(server_result[0], 0, server_result[2])
        return normalise(ss.program_lines(server_result[1]) + ss.program_lines(client_result[1]))

    def compare(self, sections_wanted, min_lines=None, **kw):
        native = self.run_probe(False, **kw)
        switched = self.run_probe(True, **kw)
        pick = lambda lines: [line for line in lines if line.split(":")[0].split()[1] in
                              sections_wanted]
        if min_lines is None:
            min_lines = 11 if "tcp" in sections_wanted else 4
        self.assertGreaterEqual(len(pick(native)), min_lines)
        self.maxDiff = None
        if not agrees(pick(native), pick(switched)):
            self.assertEqual(pick(native), pick(switched))

    BEFORE_SHUTDOWN = ("accept", "connect", "names", "socket", "tcp", "keepalive", "optedges",
                       "ip", "exchange")

    def test_ipv4_blocking_connect(self):
        self.compare(self.BEFORE_SHUTDOWN)

    def test_ipv4_nonblocking_connect(self):
        """EINPROGRESS, then POLLOUT, then SO_ERROR 0, as over TCP."""
        self.compare(self.BEFORE_SHUTDOWN, nonblock=True)

    def test_ipv6(self):
        self.compare(self.BEFORE_SHUTDOWN, family="ipv6", host="::1", nonblock=True)

    def test_v4mapped_server(self):
        self.compare(self.BEFORE_SHUTDOWN, family="v4mapped")

    def test_v4mapped_from_ipv6_socket(self):
        self.compare(self.BEFORE_SHUTDOWN, family="v4mapped", host="::ffff:127.0.0.1",
                     nonblock=True)

    # Regression: after the client's shutdown(SHUT_WR), switched sockets reported TCP_INFO state
    # ESTABLISHED on both ends, because the retained TCP sockets never saw the FIN. Checks that
    # they report FIN_WAIT2 and CLOSE_WAIT as TCP does.
    def test_after_half_close(self):
        self.compare(("shutdown",))

    # Regression: after the peer's abortive close (SO_LINGER {1, 0}), getpeername() succeeded and
    # TCP_INFO said ESTABLISHED where TCP gives ENOTCONN and CLOSE (CPython's ssl module decides
    # on that getpeername() whether a socket is connected: test_ssl's TestPreHandshakeClose
    # failed); and, in hybrid mode, a write after SO_ERROR had reported the reset was accepted
    # where TCP fails it with EPIPE.
    def test_after_peer_reset(self):
        self.compare(("peerclose",), end="abort")

    # Regression: F_SETOWN and O_ASYNC set before connect() stayed on the replaced TCP socket's
    # file, so a program waiting for SIGIO waited forever.
    def test_sigio_asked_for_before_connect(self):
        self.compare(("sigio",), min_lines=2, sigio=True)

    def test_sigio_asked_for_before_a_nonblocking_connect(self):
        self.compare(("sigio",), min_lines=2, sigio=True, nonblock=True)

    # After the peer's plain close: CLOSE_WAIT, not ESTABLISHED.
    def test_after_peer_close(self):
        self.compare(("peerclose",), end="close")


if __name__ == "__main__":
    fr.main()

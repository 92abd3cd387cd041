#!/usr/bin/env python3
"""Bad and borderline arguments get exactly the kernel's answer under slipstream-trace.

tests/programs/c/bad_args.c runs each case (unmapped, straddling and read-only buffers, short,
negative and oversized lengths, closed and non-socket fds, bad flags, blocking and non-blocking
sockets and listeners) and prints the return value, errno name and what was written back. The
output under slipstream-trace, with and without WAIT_KILLABLE_RECV, must equal the native output
line for line. One test per group of calls, so a failure names the call family.
"""

import difflib
import socket

import fixture_runs as fr
import harness

GROUPS = ("connect", "bind", "accept", "names", "sockopt")

# Differences that a connection switched to AF_UNIX keeps, documented in docs/differences.md
# (none in these groups: an abortive close (SO_LINGER {1, 0}) of a switched end, which used to
# reach the peer as EOF, resets it as over TCP since issue #9).
# case name suffix -> (native text, text under switching)
KNOWN_SWITCH_DIFFERENCES = {}


def expected_when_switched(native_lines):
    """The native output with the documented switch differences applied, and nothing else."""
    out = []
    for line in native_lines:
        name = line.split(" ", 1)[0]
        for suffix, (native_text, switched_text) in KNOWN_SWITCH_DIFFERENCES.items():
            if name.endswith(suffix) and native_text in line:
                line = line.replace(native_text, switched_text)
        out.append(line)
    return out


class BadArguments(fr.FixtureTest):

    def setUp(self):
        super().setUp()
        # A listener outside supervision: connections to it stay TCP, whatever Slipstream does
        # with connections between two supervised ends.
        self.peer = socket.socket()
        self.addCleanup(self.peer.close)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.listen(64)

    def run_group(self, group, extra=None):
        cmd = [harness.program("bad_args"), "--peer-port", str(self.peer.getsockname()[1]), group]
        if extra is not None:
            cmd = harness.supervised(cmd, extra=extra)
        result = harness.run(cmd, timeout=120)
        return result.returncode, result.stdout.splitlines(), result.stderr

    def compare(self, group):
        native = self.run_group(group)
        self.assertEqual(native[0], 0, native[2])
        self.assertGreater(len(native[1]), 10)
        # Without switching, every line must be the kernel's; with it (the default), connections
        # between the program's own supervised ends become AF_UNIX and only the documented
        # differences may show.
        for extra in (["--no-switch"], ["--no-switch", "--no-wait-killable"], [],
                      ["--no-wait-killable"]):
            expected = native[1] if "--no-switch" in extra else expected_when_switched(native[1])
            supervised = self.run_group(group, extra)
            diff = "\n".join(difflib.unified_diff(expected, supervised[1], "expected",
                                                  "slipstream-trace " + " ".join(extra),
                                                  lineterm="", n=0))
            self.assertEqual(expected, supervised[1], f"\n{diff}\nstderr: {supervised[2]}")
            self.assertEqual(supervised[0], 0, supervised[2])

    # Regression (fixed in d22a89d): on a connection moved to AF_UNIX, a second connect() gave
    # EINVAL instead of EISCONN and connect(AF_UNSPEC) gave EINVAL instead of disconnecting.
    def test_connect(self):
        self.compare("connect")

    def test_bind_and_listen(self):
        self.compare("bind")

    # Regressions covered here, fixed in d22a89d: accept() on a connected blocking TCP socket was
    # held (and hung) instead of failing EINVAL; the peer address was stored before its length
    # (Linux 6.18 stores the length first); with no free fd the connection was taken off the
    # listener's queue (it no longer polled readable).
    def test_accept(self):
        self.compare("accept")

    # Regression (fixed in d22a89d): getsockname/getpeername stored the address before the length,
    # while the kernel stores the length first (read-only addrlen, unmapped address).
    def test_getsockname_getpeername(self):
        self.compare("names")

    def test_sockopt_shutdown_socket(self):
        self.compare("sockopt")


if __name__ == "__main__":
    fr.main()

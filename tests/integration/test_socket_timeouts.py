#!/usr/bin/env python3
"""A blocking accept() on a listener with SO_RCVTIMEO gives up as the kernel does: EAGAIN after
the timeout, also while Slipstream holds the call (the supervisor runs the accept on its copy of
the listener, so it must apply the socket's timeout itself). Runs natively, under slipstream-trace
and under slipstream-trace --no-switch, and compares."""

import subprocess
import sys
import time

import fixture_runs as fr
import harness

PROGRAM = r"""
import errno, socket, struct, time
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(("127.0.0.1", 0))
l.listen(4)
l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300000))
for attempt in range(2):
    start = time.monotonic()
    try:
        l.accept()
        print("accepted")
    except OSError as e:
        elapsed = time.monotonic() - start
        print(errno.errorcode[e.errno], "in time" if 0.25 <= elapsed < 5 else f"after {elapsed:.3f} s")
print("blocking" if l.getblocking() else "non-blocking")
"""


class SocketTimeouts(fr.FixtureTest):

    def run_mode(self, extra):
        cmd = [sys.executable, "-c", PROGRAM]
        if extra is not None:
            cmd = harness.supervised(cmd, extra=extra)
        return harness.run(cmd, timeout=60)

    def test_accept_times_out_like_the_kernel(self):
        native = self.run_mode(None)
        self.assertEqual(native.stdout, "EAGAIN in time\nEAGAIN in time\nblocking\n", native)
        for extra in ([], ["--no-switch"], ["--no-wait-killable"]):
            with self.subTest(extra=extra):
                supervised = self.run_mode(extra)
                self.assertEqual(supervised.returncode, native.returncode, supervised.stderr)
                self.assertEqual(supervised.stdout, native.stdout, supervised.stderr)


if __name__ == "__main__":
    fr.main()

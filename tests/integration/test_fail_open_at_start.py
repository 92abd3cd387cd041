#!/usr/bin/env python3
"""Fail open from the first system call: slipstream-trace killed right after it launched the
program must not leave the program's trapped calls failing with ENOSYS.

The shepherd (the process that answers CONTINUE once the supervisor is gone, test_fail_open.py)
used to be forked after the program had been started. `kill -9` of slipstream-trace in between
left no process holding the seccomp listener, and the kernel then fails every trapped call with
ENOSYS: the chaos soak (tests/soak/soak.py) saw a client's connects fail so, 23 in a 32-minute run.
Now the program execs only once the shepherd exists. To stop slipstream-trace exactly at that
point the test runs it under gdb with a breakpoint on StartShepherd and kills it there.
"""

import os
import shutil
import subprocess
import sys
import time
import unittest

import fixture_runs as fr
import harness

# Connects to a port nothing listens on, each a trapped call (--no-preload): every one must fail
# as TCP does (ECONNREFUSED), none with ENOSYS.
PROGRAM = """
import errno, socket, sys
out = open(sys.argv[1] + ".tmp", "w")
for _ in range(20):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 1))
        out.write("connected\\n")
    except OSError as e:
        out.write(errno.errorcode.get(e.errno, str(e.errno)) + "\\n")
    s.close()
out.close()
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


class FailOpenAtStart(fr.FixtureTest):

    def test_killed_before_its_shepherd_started(self):
        if shutil.which("gdb") is None:
            raise unittest.SkipTest("gdb is not installed")
        result = self.path("result")
        gdb = subprocess.run(
            ["gdb", "-q", "-nx", "-batch", "-ex", "set breakpoint pending on",
             "-ex", "break slipstream::supervisor::StartShepherd", "-ex", "run", "-ex", "kill",
             "--args", harness.TRACE_BIN, "--no-preload", "--",
             sys.executable, "-c", PROGRAM, result],
            capture_output=True, text=True, timeout=120)
        self.assertIn("Breakpoint 1", gdb.stdout, gdb.stdout + gdb.stderr)
        # The program, if it ran at all, finishes within a second or two on its own.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(result):
            time.sleep(0.05)
        answers = None
        if os.path.exists(result):
            with open(result) as f:
                answers = f.read().split()
        # Before the fix the program ran, and its connects failed with ENOSYS. Now slipstream-trace
        # dies before it lets the program exec, and the program never runs.
        self.assertIsNone(answers, "the program ran without a shepherd")


if __name__ == "__main__":
    fr.main()

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


# A supervised server that accepts what comes (its port in argv[1]); the late switch is not its
# business here.
SERVER = harness.PY_LISTENER + """
import time
c, _ = l.accept()
time.sleep(30)
"""

# A preloaded client (hybrid mode) that connects once and writes what its fd then is: a socket of
# its own, or another file (the number a dead supervisor's shepherd answered, taken for the end).
CLIENT = """
import os, socket, stat, sys
os.dup2(os.open("/dev/null", os.O_RDONLY), 0)  # fd 0 open, whatever gdb left there
s = socket.socket()
s.connect(("127.0.0.1", int(sys.argv[2])))
st = os.fstat(s.fileno())
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("socket" if stat.S_ISSOCK(st.st_mode) else "other: " + os.readlink(f"/proc/self/fd/{s.fileno()}"))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
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


    def test_killed_between_the_answer_and_its_send(self):
        """A preloaded connect is answered with the end at a new fd (ADDFD SEND) after the answer
        buffer says so (preload_abi.h). Killed in between, the supervisor leaves the shepherd to
        answer 0 for the connect it made: the library must not take 0 (stdin) for the end."""
        if shutil.which("gdb") is None:
            raise unittest.SkipTest("gdb is not installed")
        port_file, result = self.path("port"), self.path("result")
        self.start(harness.supervised([sys.executable, "-c", SERVER, port_file]))
        port = fr.read_port(port_file)
        gdb = subprocess.run(
            ["gdb", "-q", "-nx", "-batch", "-ex", "set breakpoint pending on",
             "-ex", "break slipstream::fdinject::KernelFdInstaller::Install", "-ex", "run",
             "-ex", "kill", "--args", harness.TRACE_BIN, "--",
             sys.executable, "-c", CLIENT, result, str(port)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        self.assertIn("Breakpoint 1, slipstream::fdinject::KernelFdInstaller::Install",
                      gdb.stdout, gdb.stdout + gdb.stderr)
        fr.wait_until(lambda: os.path.exists(result), 20, "the client's answer")
        with open(result) as f:
            self.assertEqual(f.read(), "socket")


if __name__ == "__main__":
    fr.main()

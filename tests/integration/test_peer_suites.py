#!/usr/bin/env python3
"""Peer projects' own socket test suites, run whole under slipstream-trace: CPython's and Go's.

`python3 -m test` runs test_socket, test_ssl, test_socketserver and asyncio's socket and stream
tests: hundreds of connections between threads of one process (each side is supervised, so they
switch), with half-closes, resets, timeouts, MSG_PEEK, sendfile, SCM_RIGHTS, non-blocking connects
and TLS on top. Every test must pass as it does natively. The interpreter is Debian's
/usr/bin/python3 with its test package (libpython3.11-testsuite, from scripts/setup), in hybrid
mode (dynamically linked) and, for test_socket, on the supervisor path alone (--no-preload).

A test that fails switched is run again natively: if it fails there too, the machine is the cause
(a resource, a kernel feature) and the file is skipped with the names; otherwise it is our
failure. Found this way: after the peer's abortive close, getpeername() succeeded where TCP
says ENOTCONN (test_ssl's TestPreHandshakeClose; docs/design.md, "The peer's close, on the TCP
side").

Go's net package tests (`go test -c net`, CGO_ENABLED=0: a static binary, so the supervisor path)
run the same way: every test that passes natively must pass switched (-test.short; 324 passed,
65 skipped, both ways, when this was written).
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

import fixture_runs as fr
import harness
import switch_support as ss

# vsock: test_socket's ThreadedVSOCKSocketStreamTest blocks for minutes on VMs that have a vsock
# device but no host side.
COMMON = ["-u", "network", "--ignore", "*VSOCK*", "-v"]
SUITES = ["test_socket", "test_ssl", "test_socketserver", "test_asyncio.test_sock_lowlevel",
          "test_asyncio.test_streams"]
# The sanitized pass runs slower supervisors: the suites whose tests assert on timing stay out.
SANITIZED_SUITES = ["test_ssl", "test_asyncio.test_sock_lowlevel", "test_asyncio.test_streams"]
FAILED = re.compile(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)", re.M)


def interpreter():
    """A python3 that has CPython's test package, or None."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-c", "import test.test_socket, test.test_ssl"],
                capture_output=True).returncode == 0:
            return candidate
    return None


GO_FAILED = re.compile(r"^--- FAIL: (\S+)", re.M)


class PeerSuites(fr.FixtureTest):

    def run_suites(self, python, suites, *flags, ignore=()):
        stats = self.path("stats")
        ignored = [arg for pattern in ignore for arg in ("--ignore", pattern)]
        cmd = harness.supervised([python, "-m", "test", *suites, *COMMON, *ignored], stats=True,
                                 extra=[*flags, "-o", stats])
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
        if run.returncode != 0:
            self.fail_unless_native_fails(python, run.stdout + run.stderr)
        self.assertRegex(run.stdout, r"(?m)^(Tests )?[Rr]esult: SUCCESS", run.stdout[-3000:])
        return ss.read_stats(stats), stats

    def fail_unless_native_fails(self, python, output):
        failed = sorted(set(FAILED.findall(output)))
        self.assertTrue(failed, f"no test named as failed:\n{output[-3000:]}")
        # "test.test_socket.SomeTest[.method]" or "test.test_asyncio.test_streams.SomeTest...".
        modules = set()
        for _, where in failed:
            parts = where.split(".")
            modules.add(".".join(parts[1:3] if parts[1] == "test_asyncio" else parts[1:2]))
        names = sorted(name for name, _ in failed)
        native = subprocess.run([python, "-m", "test", *sorted(modules), *COMMON,
                                 *[arg for name in names for arg in ("-m", name)]],
                                capture_output=True, text=True, timeout=300)
        if native.returncode != 0:
            self.skipTest(f"these fail natively too, on this machine: {names}")
        self.fail(f"fail switched only: {failed}\n{output[-4000:]}")

    def test_cpython_hybrid_mode(self):
        python = interpreter()
        if python is None:
            self.skipTest("no python3 with CPython's test package (libpython3.11-testsuite)")
        sanitized = os.environ.get("SLIPSTREAM_SANITIZED") == "1"
        counts, stats = self.run_suites(python, SANITIZED_SUITES if sanitized else SUITES)
        # Hundreds of connections between the suites' threads, every one switched or, where a
        # test closes a listener before accepting, relayed.
        self.assertGreaterEqual(counts["switched"], 100 if sanitized else 500, counts)
        self.assertGreater(ss.preload_in_process(stats, "socket"), 0, "hybrid mode")

    def test_cpython_supervisor_path(self):
        python = interpreter()
        if python is None:
            self.skipTest("no python3 with CPython's test package (libpython3.11-testsuite)")
        if os.environ.get("SLIPSTREAM_SANITIZED") == "1":
            self.skipTest("test_socket asserts on timing; the hybrid test covers the sanitized pass")
        # On the supervisor path the first write after the peer's close fails with EPIPE where
        # TCP accepts it (docs/differences.md, "first write/send after the peer closed": write is
        # never trapped); these tests write to a client that has gone. testSourceAddress races
        # with itself: its client thread registers `cli.close` as a cleanup, which the main thread
        # runs before it waits for that thread, so a getsockname() slower than a few microseconds
        # (a trapped one: about 30) finds the fd closed (EBADF), about 1 run in 10 (perf showed
        # the main thread's close of the client's fd before the client's getsockname).
        counts, _ = self.run_suites(python, ["test_socket"], "--no-preload",
                                    ignore=("*testCreateConnectionClose", "*testOutsideTimeout",
                                            "*testInsideTimeout", "*testSourceAddress"))
        self.assertGreaterEqual(counts["switched"], 300, counts)


    def test_go_net_package(self):
        if shutil.which("go") is None:
            self.skipTest("no go toolchain (golang-go)")
        goroot = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True).stdout.strip()
        source = os.path.join(goroot, "src", "net")
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="",
                   GOCACHE=os.environ.get("GOCACHE", os.path.join(harness.BUILD, "go-cache")))
        binary = self.path("net.test")
        build = subprocess.run(["go", "test", "-c", "-o", binary, "net"], capture_output=True,
                               text=True, env=env, timeout=300)
        self.assertEqual(build.returncode, 0, build.stderr[-3000:])
        args = ["-test.short", "-test.timeout", "300s"]
        stats = self.path("go.stats")
        run = subprocess.run(harness.supervised([binary, *args], stats=True, extra=["-o", stats]),
                             capture_output=True, text=True, cwd=source, timeout=400)
        if run.returncode != 0:
            failed = sorted(set(GO_FAILED.findall(run.stdout)))
            self.assertTrue(failed, run.stdout[-3000:] + run.stderr[-2000:])
            pattern = "^(" + "|".join(re.escape(name.split("/")[0]) for name in failed) + ")$"
            native = subprocess.run([binary, *args, "-test.run", pattern], capture_output=True,
                                    text=True, cwd=source, timeout=400)
            if native.returncode != 0:
                self.skipTest(f"these fail natively too, on this machine: {failed}")
            self.fail(f"fail switched only: {failed}\n{run.stdout[-4000:]}")
        counts = ss.read_stats(stats)
        self.assertGreaterEqual(counts["switched"], 300, counts)


if __name__ == "__main__":
    fr.main()

"""Helpers for running Slipstream's fixture programs natively and under slipstream-trace.

Built on harness.py. Every wait here is bounded: a helper that runs out of time raises
TimeoutError (or fails the test) instead of hanging CTest. Processes a test starts are registered
with `track()` and killed when the test ends, whatever happened.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness

SYS_ACCEPT = 43  # x86_64 syscall numbers, as /proc/PID/syscall shows them
SYS_ACCEPT4 = 288
SYS_CONNECT = 42
SHEPHERD_COMM = "slipstream-shep"
PYTHON_CLIENT = os.path.join(harness.SOURCE, "tests", "programs", "py", "tcp_client.py")


class LineReader:
    """Collects a pipe's lines on a background thread so tests can wait for one with a timeout."""

    def __init__(self, stream):
        self._queue = queue.Queue()
        self.lines = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream):
        for line in iter(stream.readline, ""):
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern, timeout=10.0):
        """Returns the first new line matching `pattern` (regex); raises TimeoutError."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; saw {self.lines!r}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # keep reporting EOF
                raise EOFError(f"stream ended before {pattern!r}; saw {self.lines!r}")
            self.lines.append(line)
            if regex.search(line):
                return line

    def snapshot(self):
        """Every line seen so far, without waiting (for failure messages)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                self._queue.put(None)
                return self.lines
            self.lines.append(line)

    def drain(self, timeout=10.0):
        """Waits for EOF and returns every line seen."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.lines


class Started:
    """A started process with its stdout and stderr collected line by line."""

    def __init__(self, cmd, **kw):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, **kw)
        self.pid = self.proc.pid
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)

    def wait(self, timeout=30.0):
        """Waits for exit; returns (returncode, stdout lines, stderr lines)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return code, self.out.drain(), self.err.drain()

    def kill(self):
        if self.proc.poll() is None:
            harness.kill_with_descendants(self.proc.pid)  # a supervised program too
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


class FixtureTest(unittest.TestCase):
    """Base class: a scratch directory per test and cleanup of every tracked process."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="slipstream-it-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._pids = []
        self.addCleanup(self._kill_tracked)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, cmd, **kw):
        started = Started(cmd, **kw)
        self.addCleanup(started.kill)
        return started

    def track(self, pid):
        """Kills `pid` (SIGKILL) when the test ends, e.g. a program orphaned on purpose."""
        self._pids.append(pid)

    def _kill_tracked(self):
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def wrap(self, cmd, supervise, trace=None, extra=(), stats=None):
        """`cmd` itself, or `cmd` under slipstream-trace (with --trace -o `trace`; with --stats
        into `stats`, which must then be `trace` if both are given: -o takes both)."""
        if not supervise:
            return list(cmd)
        if stats is not None:
            assert trace in (None, stats), "--trace and --stats share one -o file"
            extra = [*extra, "--stats"] + ([] if trace else ["-o", stats])
        return harness.supervised(cmd, trace_file=trace, extra=extra)

    def assertRunsAlike(self, native, supervised, what):
        """Same exit status and the same stdout, line for line."""
        self.assertEqual(native[0], supervised[0],
                         f"{what}: exit status native {native[0]} vs supervised {supervised[0]}; "
                         f"supervised stderr: {supervised[2]}")
        self.assertEqual(native[1], supervised[1], f"{what}: stdout differs; "
                         f"native stderr: {native[2]}; supervised stderr: {supervised[2]}")


comm = harness.comm


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls `predicate` every 5 ms until it returns a truthy value; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError(f"{what} not reached within {timeout}s")


# Processes of Slipstream itself that may be children of slipstream-trace (comm is cut at 15).
SLIPSTREAM_COMMS = (SHEPHERD_COMM, "slipstreamd", "slipstream-trac")


def program_pid(trace_pid, timeout=10.0):
    """The program slipstream-trace runs: its child that is not part of Slipstream."""
    def find():
        for kid in harness.children_of(trace_pid):
            name = comm(kid)
            if name and name not in SLIPSTREAM_COMMS:
                return kid
        return None
    return wait_until(find, timeout, f"program of slipstream-trace {trace_pid}")


def shepherd_pid(trace_pid, timeout=10.0):
    def find():
        for kid in harness.children_of(trace_pid):
            if comm(kid) == SHEPHERD_COMM:
                return kid
        return None
    return wait_until(find, timeout, f"shepherd of slipstream-trace {trace_pid}")


def current_syscall(pid):
    """The syscall number `pid` is blocked in (/proc/PID/syscall), or None when it runs."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            first = f.read().split()
    except OSError:
        return None
    if not first or first[0] in ("running", "-1"):
        return None
    return int(first[0])


def wait_blocked_in(pid, numbers, timeout=10.0):
    numbers = set(numbers)
    wait_until(lambda: current_syscall(pid) in numbers, timeout,
               f"pid {pid} blocked in syscall {sorted(numbers)}")


def socket_inodes(pid):
    """Inodes of the sockets open in `pid`."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        inode = harness.fd_socket_inode(pid, fd)
        if inode is not None:
            inodes.add(inode)
    return inodes


def epoll_watched_inodes(pid):
    """Inodes of the files any epoll instance of `pid` watches (tfd lines of /proc/PID/fdinfo)."""
    inodes = set()
    for fd, link in fd_links(pid).items():
        if link != "anon_inode:[eventpoll]":
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        inodes.update(int(m, 16) for m in re.findall(r"^tfd:.*\bino:([0-9a-f]+)", text, re.M))
    return inodes


def wait_held(supervisor_pid, program_pid, timeout=10.0):
    """Waits until the supervisor holds a call on the program's sockets: it has a copy of one of
    them and waits for it to become ready (it is watched by one of the supervisor's epolls)."""
    sockets = socket_inodes(program_pid)
    wait_until(lambda: sockets & socket_inodes(supervisor_pid) &
               epoll_watched_inodes(supervisor_pid), timeout,
               f"slipstream-trace {supervisor_pid} holding a call of {program_pid}")


def fd_links(pid):
    """What each fd of `pid` points to (readlink of /proc/PID/fd/N)."""
    links = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return links
    for fd in fds:
        try:
            links[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return links


def read_port(path, timeout=10.0):
    return int(harness.wait_for_file(path, timeout))


# What a trace line may show for a connect: the supervisor's own answer, or "? (kernel)" when it
# let the kernel run the call (a connect Slipstream does not switch).
CONNECT_BLOCKING = ("0", "? (kernel)")
CONNECT_NONBLOCKING = CONNECT_BLOCKING + ("-1 EINPROGRESS (Operation now in progress)",)


def calls(records, name):
    """The parsed trace records of one call (e.g. "connect")."""
    return [r for r in records if r["call"] == name]


def note_addr(record):
    """The address in a trace note such as "(peer 127.0.0.1:5000)" or "(127.0.0.1:5000)"."""
    m = re.search(r"\((?:peer )?(\S+?)\)", record.get("note") or "")
    return m.group(1) if m else None


def run_client_server(test, server_cmd, client_cmd, port_file, *, supervise,
                      server_trace=None, client_trace=None, extra=(), timeout=60.0,
                      server_timeout=15.0, server_stats=None, client_stats=None):
    """Starts the server, runs the client to completion, waits for the server.

    Returns (server (code, out, err), client (code, out, err), port). The two programs run as
    separate processes; when `supervise` is true each has its own slipstream-trace, which writes
    its --stats summary into `server_stats` / `client_stats` when given (switch_support's
    read_stats parses them).
    """
    if os.path.exists(port_file):
        os.unlink(port_file)
    server = test.start(test.wrap(server_cmd, supervise, server_trace, extra, server_stats))
    port = read_port(port_file)
    client = test.start(test.wrap(client_cmd, supervise, client_trace, extra, client_stats))
    client_result = client.wait(timeout)
    server_result = server.wait(server_timeout)
    return server_result, client_result, port


def main():
    harness.main()


if __name__ == "__main__":
    sys.exit("fixture_runs.py is a helper module; run the test_*.py files")

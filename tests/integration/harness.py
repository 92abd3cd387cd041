"""Shared helpers for Slipstream's integration tests.

Each test file is a unittest module run by CTest as its own process (tests/CMakeLists.txt). Tests
start real processes: slipstream-trace from the build tree and the fixture programs built from
tests/programs/. Exit status 77 tells CTest the whole file was skipped.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.environ.get("SLIPSTREAM_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
TRACE_BIN = os.path.join(BUILD, "supervisor", "slipstream-trace")
PROGRAMS = os.path.join(BUILD, "tests", "programs")
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIP = 77

# Every test file gets a slipstreamd of its own (slipstream-trace starts one on demand in this
# private directory), so tests never share pairing state with each other or with the user.
if "SLIPSTREAM_RUNTIME_DIR" not in os.environ:
    os.environ["SLIPSTREAM_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="slipstream-test-")
RUNTIME_DIR = os.environ["SLIPSTREAM_RUNTIME_DIR"]


def stop_daemon():
    """Stops this test file's slipstreamd (if one was started) and removes its directory."""
    try:
        out = subprocess.run([os.path.join(BUILD, "matcher", "slipstreamd"), "--status", "--json"],
                             capture_output=True, text=True, timeout=10).stdout
        pid = int(__import__("json").loads(out).get("pid", 0))
        if pid > 0:
            os.kill(pid, signal.SIGTERM)
    except Exception:  # no daemon, or it is already gone
        pass
    shutil.rmtree(RUNTIME_DIR, ignore_errors=True)

# The --trace line format: one pattern, in supervisor/trace_line.re, which the C++ test of the
# formatter (supervisor/trace_log_test.cc) reads too.
with open(os.path.join(SOURCE, "supervisor", "trace_line.re")) as _f:
    TRACE_LINE = re.compile(_f.readline().rstrip("\n"))


def program(name):
    """Path of a built fixture program (tests/programs)."""
    path = os.path.join(PROGRAMS, name)
    if not os.path.exists(path):
        raise unittest.SkipTest(f"fixture {name} not built")
    return path


def supervised(cmd, *, trace_file=None, stats=False, extra=()):
    """The command line that runs `cmd` under slipstream-trace."""
    wrap = [TRACE_BIN, *extra]
    if trace_file:
        wrap += ["--trace", "-o", trace_file]
    if stats:
        wrap += ["--stats"]
    return wrap + ["--"] + list(cmd)


def run(cmd, *, timeout=60, check=False, **kw):
    """Runs to completion, capturing stdout/stderr as text."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, **kw)


def start(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, text=True, **kw)


def read_trace(path):
    """Parsed --trace lines: a list of dicts (time, tid, call, args, result, note)."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = TRACE_LINE.match(line)
            if m:
                records.append(m.groupdict())
    return records


# Python source that test programs start with: a listener `l` on 127.0.0.1 at an ephemeral port,
# whose number is written atomically to the file argv[1] (fixture_runs.read_port waits for it).
PY_LISTENER = """
import os, socket, sys
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(8)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(l.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file(path, timeout=10.0):
    """Waits until `path` exists and is non-empty; returns its stripped content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def wait_for_port(port, host="127.0.0.1", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.01)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unix_inodes(table="/proc/net/unix"):
    """Inodes of every AF_UNIX socket in this network namespace (/proc/net/unix), or in that of a
    given /proc/PID/net/unix."""
    inodes = set()
    with open(table) as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 7:
                inodes.add(int(fields[6]))
    return inodes


def fd_socket_inode(pid, fd):
    """The socket inode behind /proc/PID/fd/FD, or None if it is not a socket."""
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    m = re.match(r"socket:\[(\d+)\]", link)
    return int(m.group(1)) if m else None


def children_of(pid):
    """Direct children of `pid` (from /proc/PID/task/*/children)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def comm(pid):
    """The process's name (/proc/PID/comm, at most 15 bytes), None once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def descendants(pid):
    """Every live descendant of `pid` (walking /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        for kid in children_of(todo.pop()):
            if kid not in found:
                found.append(kid)
                todo.append(kid)
    return found


def kill_with_descendants(pid):
    """SIGKILLs `pid` and everything below it (a program under slipstream-trace has its own
    process group, and would outlive a killed supervisor, orphaned), but for a slipstreamd below
    it: the supervisor that started it adopts it (child subreaper), and it serves the other tests.
    A slipstreamd that is `pid` itself, started by the test, is killed: left alone, the test's
    clean-up waited for its 30 s idle exit."""
    for victim in [pid] + descendants(pid):
        if victim != pid and comm(victim) == "slipstreamd":
            continue
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_by_exe(wanted):
    """SIGKILLs every process whose executable path `wanted(path)` accepts (e.g. daemons that
    installed binaries started, which no test tracks)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if wanted(exe):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_tree(proc, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def main():
    if not os.path.exists(TRACE_BIN):
        print(f"slipstream-trace not built at {TRACE_BIN}", file=sys.stderr)
        sys.exit(1)
    try:
        prog = unittest.main(exit=False, verbosity=2)
    finally:
        stop_daemon()
    result = prog.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun > 0 and len(result.skipped) == result.testsRun:
        sys.exit(SKIP)
    sys.exit(0)

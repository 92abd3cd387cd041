"""Helpers for the switch tests (test_switch_*.py): gated fixture processes and kernel evidence.

The switch fixtures (tests/programs/c/switch_peer.c, tests/programs/go/switchpeer,
tests/programs/py/switch_peer.py) print "ready client|server pid=P fd=F local=A peer=B" for each
connection and then wait for a line on stdin, so a test can look at the kernel's view of a live
connection before any byte flows. The evidence read here is the kernel's: /proc/PID/fd links,
/proc/net/unix, /proc/net/tcp{,6}, the peer inode of an AF_UNIX socket (ss), and the daemon's
own `slipstreamd --status --json`.
"""

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import fixture_runs as fr
import harness

DAEMON_BIN = os.path.join(harness.BUILD, "matcher", "slipstreamd")
PY_PEER = os.path.join(harness.SOURCE, "tests", "programs", "py", "switch_peer.py")
READY = re.compile(r"^ready (?P<role>client|server) pid=(?P<pid>\d+) fd=(?P<fd>\d+) "
                   r"local=(?P<local>\S+) peer=(?P<peer>\S+)$")
CONN = re.compile(r"^conn (?P<fields>.*)$")
SWITCHED_NOTE = re.compile(r"switched to unix \((?P<local>\S+) -> (?P<remote>\S+)\)")


# ---- Fixture command lines ------------------------------------------------------------------

def c_peer(role, *args):
    return [harness.program("switch_peer"), role, *args]


def go_peer(role, *args):
    # The Go flag package takes --flag as well as -flag.
    return [harness.program("switchpeer"), role, *args]


def py_peer(role, *args, api="blocking"):
    return [sys.executable, PY_PEER, role, "--api", api, *args]


def c_dyn_peer(role, *args):
    """switch_peer_dyn: runs in hybrid mode under slipstream-trace (libslipstream-preload.so)."""
    return [harness.program("switch_peer_dyn"), role, *args]


PEERS = {
    "c": c_peer,
    "c_dyn": c_dyn_peer,
    "go": go_peer,
    "py": lambda role, *args: py_peer(role, *args, api="blocking"),
    "asyncio": lambda role, *args: py_peer(role, *args, api="asyncio"),
}


# Fixtures that are dynamically linked, so that slipstream-trace runs them in hybrid mode: the
# dynamic C build and CPython (every supported interpreter is a dynamically linked executable).
DYNAMIC_PEERS = ("c_dyn", "py", "asyncio")


# ---- Processes ------------------------------------------------------------------------------

descendants = harness.descendants


kill_with_descendants = harness.kill_with_descendants


def after_gate(cmd):
    """`cmd` run by a shell that first waits for one line on stdin (see Gated.start_program)."""
    return ["sh", "-c", 'read _; exec "$@"', "sh", *cmd]


class Gated:
    """A started process whose stdin is a pipe: each go() releases one gate of the program."""

    def __init__(self, test, cmd, env=None, **kw):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, **kw)
        self.pid = self.proc.pid
        self.out = fr.LineReader(self.proc.stdout)
        self.err = fr.LineReader(self.proc.stderr)
        test.addCleanup(self.kill)

    def ready(self, timeout=20.0):
        """Waits for the next "ready" line; returns its fields (pid and fd as ints)."""
        m = READY.match(self.out.wait_for(r"^ready ", timeout))
        info = m.groupdict()
        info["pid"], info["fd"] = int(info["pid"]), int(info["fd"])
        return info

    def wait_line(self, pattern, timeout=20.0):
        return self.out.wait_for(pattern, timeout)

    def start_program(self, status=None, supervisor=None, timeout=20.0):
        """For a slipstream-trace run of after_gate(cmd): lets the program start once the daemon
        lists this supervisor. A supervisor learns the supervised listeners from the daemon when
        its session starts, after the program was launched; a program that connects at once
        may otherwise be decided before that list arrived (see test_switch_pairs.py,
        test_c_client_started_at_once_repeated). `supervisor` is the slipstream-trace pid when
        it is not this process (e.g. under runuser); `status` reads the daemon's status."""
        pid = supervisor or self.pid
        fr.wait_until(lambda: pid in supervisor_pids(status), timeout,
                      f"slipstreamd listing slipstream-trace {pid}")
        self.go()

    def go(self, lines=1):
        try:
            self.proc.stdin.write("\n" * lines)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def finish(self, timeout=60.0):
        """Closes stdin (releasing every later gate), waits; returns (code, out, err) lines."""
        self.close_stdin()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return code, self.out.drain(), self.err.drain()

    def kill(self):
        if self.proc.poll() is None:
            kill_with_descendants(self.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (BrokenPipeError, OSError, ValueError):
                pass


def summary(lines, role):
    """The "client: ..." or "server: ..." summary line among `lines`."""
    found = [line for line in lines if line.startswith(role + ": ")]
    return found[-1] if found else None


GATE_LINE = re.compile(r"^(ready|midway|waiting|refused|paused|done) ")


def program_lines(lines):
    """A program's output without the lines its gates print."""
    return [line for line in lines if not GATE_LINE.match(line)]


def trace_records(path):
    """harness.read_trace, or [] while the file does not exist yet."""
    try:
        return harness.read_trace(path)
    except FileNotFoundError:
        return []


def conn_lines(lines):
    """Parsed "conn k=v ..." lines: a list of dicts."""
    out = []
    for line in lines:
        m = CONN.match(line)
        if m:
            out.append(dict(kv.split("=", 1) for kv in m.group("fields").split()))
    return out


# ---- Kernel evidence ------------------------------------------------------------------------

def _hex_addr(text):
    """An address of /proc/net/tcp{,6} ("0100007F:1F90") as "127.0.0.1:8080" or "[::1]:8080"."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return canonical(addr_text(ipaddress.ip_address(raw), int(port, 16)))


def addr_text(ip, port):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def canonical(addr):
    """"[::ffff:127.0.0.1]:80" -> "127.0.0.1:80" (as slipstreamd prints addresses)."""
    m = re.fullmatch(r"\[::ffff:(\d+\.\d+\.\d+\.\d+)\]:(\d+)", addr)
    return f"{m.group(1)}:{m.group(2)}" if m else addr


def tcp_sockets():
    """Every TCP socket of this network namespace: a list of (local, remote, state, inode).

    /proc/net/tcp is produced bucket by bucket across read() calls; while other tests open and
    close connections a resumed read can repeat an entry, so the file is read in one large read
    and identical entries are kept once."""
    entries = {}  # an ordered set
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 22):
                chunks.append(chunk)
        finally:
            os.close(fd)
        for line in b"".join(chunks).decode().splitlines()[1:]:
            fields = line.split()
            entry = (_hex_addr(fields[1]), _hex_addr(fields[2]), int(fields[3], 16),
                     int(fields[9]))
            entries[entry] = None
    return list(entries)


TCP_ESTABLISHED = 1
TCP_LISTEN = 10  # include/net/tcp_states.h


def tcp_inodes():
    return {inode for _, _, _, inode in tcp_sockets() if inode}


def unix_peers():
    """{inode: peer inode} of every connected AF_UNIX stream socket (ss -x, from sock_diag)."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-xnH"], capture_output=True, text=True, timeout=20).stdout
    return parse_unix_peers(out)


def parse_unix_peers(out):
    """{inode: peer inode} from `ss -xnH` output."""
    peers = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "u_str" and fields[-1].isdigit() \
                and fields[-3].isdigit():
            peers[int(fields[-3])] = int(fields[-1])
    return peers


def daemon_status(prefix=(), daemon=DAEMON_BIN, timeout=10):
    """`slipstreamd --status --json`, parsed ({"running": False} when there is no daemon).
    `prefix` runs it otherwise (e.g. as another user)."""
    out = subprocess.run([*prefix, daemon, "--status", "--json"], capture_output=True,
                         text=True, timeout=timeout)
    return json.loads(out.stdout)


def supervisor_pids(status=None):
    return [s["pid"] for s in (status or daemon_status)().get("supervisors", [])]


def status_connection(client_unix_inode, status=None, timeout=10.0):
    """Waits until the daemon lists the connection whose client end is this inode; returns it."""
    def find():
        for c in (status or daemon_status)().get("connections", []):
            if c["client_unix_inode"] == client_unix_inode:
                return c
        return None
    return fr.wait_until(find, timeout, f"slipstreamd listing client end {client_unix_inode}")


def kill_daemon(test, status=None):
    """kill -9 of the daemon that `slipstreamd --status --json` names; returns its pid."""
    pid = (status or daemon_status)()["pid"]
    os.kill(pid, signal.SIGKILL)
    fr.wait_until(lambda: not alive(pid), 10, f"slipstreamd {pid} gone")
    return pid


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def same_process(tid, pid):
    """Is `tid` the process `pid` or one of its threads?"""
    return tid == pid or os.path.exists(f"/proc/{pid}/task/{tid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def trace_pid_of(program_pid):
    """The slipstream-trace that supervises `program_pid` (its nearest such ancestor)."""
    pid = program_pid
    for _ in range(64):
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return None
        if fr.comm(pid) == "slipstream-trac":
            return pid
    return None


class EvidenceMixin:
    """Assertions on the kernel's view of a connection, for FixtureTest subclasses."""

    def assert_switched(self, client, server, *, status=None, check_status=True):
        """`client` and `server` are ready-line dicts of the two ends of one connection: both fds
        must be AF_UNIX sockets connected to each other, not TCP; the daemon must list the pair
        with the TCP addresses the programs see; the TCP connection must live on in the
        supervisors only. Returns the daemon's record of the connection."""
        c_ino = harness.fd_socket_inode(client["pid"], client["fd"])
        s_ino = harness.fd_socket_inode(server["pid"], server["fd"])
        self.assertIsNotNone(c_ino, f"client fd {client} is not a socket")
        self.assertIsNotNone(s_ino, f"server fd {server} is not a socket")
        unix, tcp = harness.unix_inodes(), tcp_inodes()
        self.assertIn(c_ino, unix, "the client's fd must be an AF_UNIX socket (/proc/net/unix)")
        self.assertNotIn(c_ino, tcp, "the client's fd must not be a TCP socket")
        self.assertIn(s_ino, unix, "the server's fd must be an AF_UNIX socket (/proc/net/unix)")
        self.assertNotIn(s_ino, tcp, "the server's fd must not be a TCP socket")
        peers = unix_peers()
        if peers is not None:
            self.assertEqual(peers.get(c_ino), s_ino, "the two fds must be one socketpair")
        # The programs see TCP addresses, mirrored.
        self.assertEqual(canonical(client["local"]), canonical(server["peer"]))
        self.assertEqual(canonical(client["peer"]), canonical(server["local"]))
        # The real TCP connection exists, held by the supervisors, not by the programs.
        retained = [e for e in tcp_sockets()
                    if e[0] == canonical(client["local"]) and e[1] == canonical(client["peer"])]
        self.assertEqual(len(retained), 1, f"retained client TCP socket: {retained}")
        self.assertEqual(retained[0][2], TCP_ESTABLISHED)
        self.assertNotIn(retained[0][3], fr.socket_inodes(client["pid"]))
        record = None
        if check_status:
            record = status_connection(c_ino, status)
            self.assertEqual(record["server_unix_inode"], s_ino, record)
            self.assertEqual(record["client"], canonical(client["local"]), record)
            self.assertEqual(record["server"], canonical(server["local"]), record)
            # The process, or (see test_switch_pairs.py's test_status_lists_pids_not_threads)
            # the thread of it that connected or accepted.
            self.assertTrue(same_process(record["client_pid"], client["pid"]), record)
            self.assertTrue(same_process(record["server_pid"], server["pid"]), record)
        return record

    def assert_on_tcp(self, end, *, status=None):
        """`end` (a ready-line dict) is a plain TCP socket, established to the address it names,
        and the daemon lists no switched connection for it."""
        ino = harness.fd_socket_inode(end["pid"], end["fd"])
        self.assertIsNotNone(ino)
        self.assertNotIn(ino, harness.unix_inodes(), f"{end} must not be AF_UNIX")
        entries = [e for e in tcp_sockets() if e[3] == ino]
        self.assertEqual(len(entries), 1, f"{end} must be in /proc/net/tcp")
        local, remote, state, _ = entries[0]
        self.assertEqual(local, canonical(end["local"]))
        self.assertEqual(remote, canonical(end["peer"]))
        self.assertEqual(state, TCP_ESTABLISHED)
        for c in (status or daemon_status)().get("connections", []):
            self.assertNotIn(ino, (c["client_unix_inode"], c["server_unix_inode"]))
        return ino


def trace_switches(records, call):
    """Trace records of `call` that are marked as switched."""
    return [r for r in records if r["call"] == call and "switched to unix" in (r["note"] or "")]


def accept_switches(records):
    """The switched accepts in a server's trace: a trapped accept/accept4, or, in hybrid mode, the
    late claim (getsockopt SLIPSTREAM_OPT_CLAIM) after an accept served in-process. Both notes
    name the peer as "(peer ADDR)"."""
    return [r for r in records
            if (r["call"] in ("accept", "accept4") or
                (r["call"] == "getsockopt" and "SLIPSTREAM_OPT_CLAIM" in r["args"]))
            and "switched to unix" in (r["note"] or "")]


STATS_CONNECTIONS = re.compile(
    r"connections seen (?P<seen>\d+) \(connect (?P<connects>\d+), accept (?P<accepts>\d+)\): "
    r"switched (?P<switched>\d+), relayed (?P<relayed>\d+), left on TCP (?P<tcp>\d+)")


PRELOAD_IN_PROCESS = re.compile(
    r"^slipstream-trace: served in-process \(preload\) \d+, no notification:(?P<calls>.*)$", re.M)


def preload_counts(path):
    """{call: count} of the calls libslipstream-preload.so served in-process (hybrid mode:
    dynamically linked programs), from the --stats/--trace output in `path`; {} without it."""
    with open(path) as f:
        m = PRELOAD_IN_PROCESS.search(f.read())
    if not m:
        return {}
    words = m.group("calls").split()
    return dict(zip(words[::2], map(int, words[1::2])))


def preload_left_on_tcp(path):
    """Connections libslipstream-preload.so made in-process and left on TCP (a connect to a port
    without a supervised listener, an accept with no switch in flight to its port): the
    supervisor never saw them. 0 without the library."""
    with open(path) as f:
        return preload_connections(f.read())["tcp"]


def preload_in_process(path, call):
    """How many `call`s libslipstream-preload.so served in-process; 0 without the library."""
    return preload_counts(path).get(call, 0)


PRELOAD_TCP = re.compile(
    r"^slipstream-trace: connections left on TCP in-process \(preload\) (?P<tcp>\d+) "
    r"\(connect (?P<connects>\d+), accept (?P<accepts>\d+)\)$", re.M)
PRELOAD_CLAIMS = re.compile(
    r"^slipstream-trace: accepts offered to the supervisor by the preload (?P<claims>\d+): "
    r"switched (?P<claims_switched>\d+)$", re.M)


def preload_connections(text):
    """The library's connection counts in a --stats text: connections it left on TCP in-process
    (tcp = connects + accepts) and the accepts it offered to the supervisor (claims, of which
    claims_switched were switched); all 0 without the library."""
    out = dict.fromkeys(("tcp", "connects", "accepts", "claims", "claims_switched"), 0)
    for pattern in (PRELOAD_TCP, PRELOAD_CLAIMS):
        m = pattern.search(text)
        if m:
            out.update({k: int(v) for k, v in m.groupdict().items()})
    return out


def read_stats(path):
    """The connection counts of a --stats summary in `path`, as ints: the supervisor's, plus
    `preload_tcp_accepts`, the accepts a preloaded program made in-process and left on TCP (they
    never reach the supervisor)."""
    with open(path) as f:
        text = f.read()
    m = STATS_CONNECTIONS.search(text)
    if not m:
        return None
    out = {k: int(v) for k, v in m.groupdict().items()}
    out["preload_tcp_accepts"] = preload_connections(text)["accepts"]
    return out


def free_port(family=socket.AF_INET):
    with socket.socket(family) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


class HybridMixin:
    """Runs a switch test class in hybrid mode: a subclass sets HYBRID = True, and the class's
    fixtures (self.fixture(name)) are then the dynamically linked builds (NAME_dyn, see
    tests/CMakeLists.txt), into which slipstream-trace preloads libslipstream-preload.so. Its
    supervised runs (self.supervise) report --stats, and assert_hybrid_used() proves the library
    was in use: every such run must show calls served in-process (each fixture makes its first
    socket() there). Without HYBRID both are the static fixtures and plain harness.supervised."""

    HYBRID = False

    def fixture(self, name):
        return harness.program(name + "_dyn" if self.HYBRID else name)

    def supervise(self, cmd, *, trace_file=None, stats=False, extra=()):
        if not self.HYBRID:
            return harness.supervised(cmd, trace_file=trace_file, stats=stats, extra=extra)
        extra = list(extra)
        runs = self.__dict__.setdefault("_hybrid_runs", [])
        if trace_file is not None:
            path = trace_file
        elif "-o" in extra:
            path = extra[extra.index("-o") + 1]
        else:
            path = self.path(f"hybrid.{len(runs)}.stats")
            extra += ["-o", path]
        runs.append(path)
        return harness.supervised(cmd, trace_file=trace_file, stats=True, extra=extra)

    def assert_library_loaded(self, pid):
        """In hybrid mode: `pid` has libslipstream-preload.so mapped (for runs whose
        slipstream-trace is killed before it can write its counts)."""
        if not self.HYBRID:
            return
        with open(f"/proc/{pid}/maps") as f:
            self.assertIn("libslipstream-preload.so", f.read(), f"pid {pid} runs without the "
                          "library: no hybrid mode")

    def assert_hybrid_used(self, timeout=20.0):
        """In hybrid mode: each supervised run since the last call served calls in-process (its
        slipstream-trace writes the counts when its program has exited; waited for)."""
        if not self.HYBRID:
            return
        runs = self.__dict__.get("_hybrid_runs", [])
        self.assertTrue(runs, "no supervised run to check")
        for path in runs:
            def counts():
                try:
                    return preload_counts(path)
                except FileNotFoundError:
                    return None
            try:
                got = fr.wait_until(counts, timeout, f"the in-process counts in {path}")
            except TimeoutError:
                with open(path) as f:
                    self.fail(f"{path} has no calls served in-process (no hybrid mode):\n"
                              f"{f.read()[-3000:]}")
            self.assertGreaterEqual(got.get("socket", 0), 1,
                                    f"{path}: no socket() served in-process, so no hybrid mode: "
                                    f"{got}")
        runs.clear()

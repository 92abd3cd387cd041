#!/usr/bin/env python3
"""Chaos soak (issue #12, point 2): mixed servers and clients, supervised, hybrid and plain,
while faults are injected at random; every connection's fate is checked.

    soak.py [--seconds N | --minutes N] [--seed S] [--clients K] [-v]

Servers (each on a fixed port for the whole run, restarted there when chaos kills them):
  c      static C (tests/programs/c/soak_peer.c) under slipstream-trace   (never killed)
  go     Go, CGO_ENABLED=0 (tests/programs/go/soakpeer) under slipstream-trace (never killed)
  py     CPython (tests/programs/py/soak_peer.py) under slipstream-trace: hybrid mode
  cdyn   dynamically linked C under slipstream-trace: hybrid, RLIMIT_NOFILE 64 (near its limit)
  redis  redis-server under slipstream-trace: hybrid
  plain  static C, not supervised: its connections stay TCP
Clients (short-lived processes, a few at a time, random connection counts, sizes and lifetimes):
  c-sup (static C, supervisor path), cdyn-hyb (dynamic C, hybrid), cdyn-sup (dynamic C with
  --no-preload), py-hyb (CPython, hybrid; also speaks RESP to redis), c-plain (static C, not
  supervised), c-lowfd (static C, supervised, RLIMIT_NOFILE one short of its threads' needs).
Faults, at random moments: kill -9 of a client's or a server's slipstream-trace, of slipstreamd,
of a client program or a server program (the latter restarted 0.3-2 s later), SIGSTOP of
slipstreamd for 0.1-3 s then SIGCONT. A server whose supervisor was killed runs on unsupervised
(fail-open) until chaos restarts it.

Every connection is one exchange of tests/programs/c/soak_proto.h: length-prefixed frames, every
byte checked against a pattern of the client's nonce both ways, the reply naming the server and
echoing the nonce; the client and the server report what their fd really is (AF_UNIX or TCP,
from the socket's xattr, which no supervisor emulates). Per connection, the verdict:
  ok        byte-exact both ways: switched (both ends AF_UNIX), relayed (client AF_UNIX, server
            TCP) or TCP
  failed    an error TCP gives (ECONNRESET, EPIPE, ECONNREFUSED, EMFILE at socket(), an EOF before
            the announced length, ...) *explained* by a fault injected on that connection's path
            while it lived (its client's supervisor, its server or the server's supervisor killed,
            the server down, the client's low fd limit)
  LOST      a corrupt byte, data after the reply, or a failure no injected fault explains (a short
            read then EOF with nobody killed is silent loss)
  MISPAIRED the reply names another nonce or server (or the server's end is AF_UNIX while the
            client's is TCP)
  HUNG      a call that outlived its bound (client watchdog), a server connection stalled 60 s, or
            a client process that did not finish in time
After the run (all servers back under supervision, no client left): the fds and threads of every
process that lived through the whole run (servers c and go with their slipstream-trace, and the
daemon when it was not killed) must be back to their baseline, RSS within tolerance, and no zombie
may be left under the soak. Exit status 1 on any LOST, MISPAIRED, HUNG, leak or zombie.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402  (sets SLIPSTREAM_RUNTIME_DIR to a private directory)

DAEMON_BIN = os.path.join(harness.BUILD, "matcher", "slipstreamd")
PY_PEER = os.path.join(harness.SOURCE, "tests", "programs", "py", "soak_peer.py")
HANG_S = 20          # every client call is bounded by this (its watchdog adds 5 s)
SELF_CHECK_HANG_S = 3
SETTLE_S = 4.0       # release sweeps are 1-2 s; after this the survivors must be at baseline
IMMUNE = ("c", "go")  # servers chaos never kills: their fds/threads/RSS are checked at the end
FD_SLACK, THREAD_SLACK = 2, 2
RSS_SLACK_KIB = 16 * 1024


def now():
    return time.monotonic()


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


# ---- /proc --------------------------------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid) of `pid`, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def fd_kinds(pid):
    """Counter of what the fds of `pid` are ("socket:", "anon_inode:[pidfd]", a path, ...)."""
    kinds = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[link.split("[")[0] if link.startswith(("socket:", "pipe:")) else link] += 1
    return kinds


PIDFD = "anon_inode:[pidfd]"
PIDFD_CACHE = 512  # tracer/pidfd_cache.h: pidfds of recently trapping threads, kept up to this


def usage(pid):
    """(fds, threads, rss KiB, fd kinds) of `pid`, or None when it is gone. The fds do not count
    pidfds: slipstream-trace caches one per thread that trapped (bounded, checked separately)."""
    try:
        kinds = fd_kinds(pid)
        fds = sum(kinds.values()) - kinds[PIDFD]
        threads = len(os.listdir(f"/proc/{pid}/task"))
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return fds, threads, rss, kinds
    except OSError:
        return None


comm, descendants = harness.comm, harness.descendants


def program_of(trace_pid, timeout=5.0):
    """The program a slipstream-trace runs (its child that is not part of Slipstream)."""
    deadline = now() + timeout
    while now() < deadline:
        for kid in harness.children_of(trace_pid):
            if comm(kid) not in (None, "slipstream-shep", "slipstreamd", "slipstream-trac"):
                return kid
        if not alive(trace_pid):
            return None
        time.sleep(0.01)
    return None


def daemon_pid():
    """The slipstreamd of this soak's runtime directory (it holds its lock file open)."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or comm(int(name)) != "slipstreamd":
            continue
        try:
            for fd in os.listdir(f"/proc/{name}/fd"):
                if os.readlink(f"/proc/{name}/fd/{fd}").startswith(harness.RUNTIME_DIR):
                    return int(name)
        except OSError:
            continue
    return None


def zombies_under(roots):
    """Zombie processes whose parent is one of `roots` or their descendants."""
    parents = set(roots)
    for r in roots:
        parents.update(descendants(r))
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[0] == "Z" and st[1] in parents:
                found.append((int(name), st[1], comm(int(name))))
    return found


def kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


# ---- Servers ------------------------------------------------------------------------------------

def server_port(rng):
    """A free port below the ephemeral range: a server is restarted on its port, and a client's
    connection (ours, or another test's) must not be holding it as its local port meanwhile."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError):
        pass
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return harness.free_port()


class Server:
    def __init__(self, soak, name, cmd_for_port, supervised, extra=()):
        self.soak, self.name = soak, name
        self.cmd_for_port, self.supervised, self.extra = cmd_for_port, supervised, extra
        self.port = server_port(soak.rng)
        self.proc = None         # Popen: slipstream-trace, or the program when unsupervised
        self.program = None      # pid of the program
        self.down = []           # [start, end] windows when nothing listened on the port
        self.unsupervised_since = None
        self.lock = threading.Lock()
        self.restarts = 0

    def start(self):
        cmd = self.cmd_for_port(self.port)
        if self.supervised:
            cmd = [harness.TRACE_BIN, *self.extra, "--", *cmd]
        out = open(os.path.join(self.soak.tmp, f"server-{self.name}.out"), "a")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.program = program_of(self.proc.pid) if self.supervised else self.proc.pid
        self.wait_listening()
        self.unsupervised_since = None
        if self.down and self.down[-1][1] is None:
            self.down[-1][1] = now()

    def wait_listening(self, timeout=30.0):
        deadline = now() + timeout
        while now() < deadline:
            if self.listening():
                if not self.supervised or self.registered():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"server {self.name} not listening on {self.port}")

    def listening(self):
        want = f":{self.port:04X} "
        for path in ("/proc/net/tcp",):
            with open(path) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(want.strip()):
                        return True
        return False

    def registered(self):
        status = self.soak.status()
        return any(l["address"].endswith(f":{self.port}") for l in status.get("listeners", []))

    def kill_program(self):
        """kill -9 of the server program; it is down until restart()."""
        with self.lock:
            self.down.append([now(), None])
            kill(self.program)
            for _ in range(500):
                if not alive(self.program):
                    break
                time.sleep(0.01)
            if self.supervised:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    kill(self.proc.pid)
                    self.proc.wait(timeout=10)
            else:
                self.proc.wait(timeout=10)

    def restart(self):
        with self.lock:
            self.start()
            self.restarts += 1

    def stop(self):
        for pid in [self.proc.pid] + descendants(self.proc.pid) + [self.program]:
            kill(pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def was_down(self, t0, t1):
        return any(start <= t1 + 0.5 and (end is None or end >= t0 - 0.5)
                   for start, end in self.down)


# ---- Clients ------------------------------------------------------------------------------------

class Client:
    """One client process (and its slipstream-trace): output in a file, parsed when it is gone."""

    def __init__(self, soak, kind, cmd, supervised, lowfd=False):
        self.soak, self.kind, self.lowfd, self.supervised = soak, kind, lowfd, supervised
        self.out_path = os.path.join(soak.tmp, f"client-{soak.next_id()}.out")
        out = open(self.out_path, "w")
        self.started = now()
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.program = None if supervised else self.proc.pid
        self.supervisor_killed_at = None
        self.killed = False

    def program_pid(self):
        if self.program is None and self.supervised:
            self.program = program_of(self.proc.pid, timeout=0.5)
        return self.program

    def done(self):
        if self.proc.poll() is None:
            return False
        # After its supervisor was killed, the program runs on (fail-open) and still writes.
        return self.program is None or not alive(self.program)

    def kill_all(self):
        for pid in [self.proc.pid] + descendants(self.proc.pid) + [self.program or 0]:
            if pid:
                kill(pid)


# ---- The soak -----------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = tempfile.mkdtemp(prefix="slipstream-soak-")
        self.ids = 0
        self.faults = collections.Counter()
        self.fault_log = []          # (time, kind, detail)
        self.stop_chaos = threading.Event()
        self.clients, self.finished = [], []
        self.counts = collections.Counter()   # (client kind, server, verdict)
        self.failures = collections.Counter()  # "stage:errno" of the explained failures
        self.messages = collections.Counter()  # slipstream-trace's messages (digits as N)
        self.problems = []                    # text lines of LOST/MISPAIRED/HUNG details
        self.bytes_verified = 0
        self.conns = 0
        self.daemon_stopped = threading.Lock()
        self.daemon_kills = 0
        self.clients_killed = 0
        self.deadline = None

    def next_id(self):
        self.ids += 1
        return self.ids

    def status(self):
        try:
            out = subprocess.run([DAEMON_BIN, "--status", "--json"], capture_output=True,
                                 text=True, timeout=5).stdout
            return json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            return {}

    # ---- set-up ----

    def program(self, name):
        path = os.path.join(harness.PROGRAMS, name)
        if not os.path.exists(path):
            sys.exit(f"soak: fixture {path} not built")
        return path

    def make_servers(self):
        c, cdyn, go = (self.program("soak_peer"), self.program("soak_peer_dyn"),
                       self.program("soakpeer"))
        pf = lambda name: os.path.join(self.tmp, f"{name}.port")  # noqa: E731
        bad = ["--sabotage", "4"] if self.args.self_check else []
        self.servers = {
            "c": Server(self, "c", lambda p: [c, "server", "--name", "c", "--port", str(p),
                                              "--port-file", pf("c"), *bad], True),
            "go": Server(self, "go", lambda p: [go, "-name", "go", "-port", str(p),
                                                "-port-file", pf("go")], True),
            "py": Server(self, "py", lambda p: [sys.executable, PY_PEER, "server", "--name", "py",
                                                "--port", str(p), "--port-file", pf("py")], True),
            "cdyn": Server(self, "cdyn", lambda p: [cdyn, "server", "--name", "cdyn", "--port",
                                                    str(p), "--port-file", pf("cdyn"),
                                                    "--nofile", "64"], True),
            "plain": Server(self, "plain", lambda p: [c, "server", "--name", "plain", "--port",
                                                      str(p), "--port-file", pf("plain"), *bad],
                            False),
        }
        redis = shutil.which("redis-server")
        if redis:
            rdir = os.path.join(self.tmp, "redis")
            os.makedirs(rdir, exist_ok=True)
            self.servers["redis"] = Server(
                self, "redis", lambda p: [redis, "--port", str(p), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no", "--daemonize", "no",
                                          "--dir", rdir], True)
        for s in self.servers.values():
            s.start()

    def targets(self, with_redis):
        out = []
        for name, s in self.servers.items():
            if name != "redis" or with_redis:
                out += ["--target", f"{name}=127.0.0.1:{s.port}"]
        return out

    CLIENT_KINDS = ("c-sup", "cdyn-hyb", "cdyn-sup", "py-hyb", "c-plain", "c-lowfd")

    def spawn_client(self, kind=None):
        kind = kind or self.rng.choice(self.CLIENT_KINDS)
        threads = self.rng.randint(1, 6)
        conns = self.rng.randint(threads, 8 * threads)
        seed = self.rng.randrange(1 << 30)
        common = ["--conns", str(conns), "--threads", str(threads), "--seed", str(seed),
                  "--max-bytes", str(self.rng.choice((4096, 65536, 1 << 20))),
                  "--max-hold-ms", str(self.rng.choice((0, 200, 1500))),
                  "--hang-s", str(SELF_CHECK_HANG_S if self.args.self_check else HANG_S)]
        trace = [harness.TRACE_BIN, "--"]
        lowfd = False
        if kind == "c-sup":
            cmd = trace + [self.program("soak_peer"), "client", *self.targets(False), *common]
        elif kind == "cdyn-hyb":
            cmd = trace + [self.program("soak_peer_dyn"), "client", *self.targets(False), *common]
        elif kind == "cdyn-sup":
            cmd = [harness.TRACE_BIN, "--no-preload", "--", self.program("soak_peer_dyn"),
                   "client", *self.targets(False), *common]
        elif kind == "py-hyb":
            cmd = trace + [sys.executable, PY_PEER, "client", *self.targets(True), *common]
        elif kind == "c-plain":
            cmd = [self.program("soak_peer"), "client", *self.targets(False), *common]
        else:  # c-lowfd: stdin/out/err plus one socket per thread, less one
            lowfd = True
            cmd = trace + [self.program("soak_peer"), "client", "--nofile", str(2 + threads),
                           *self.targets(False), *common]
        self.clients.append(Client(self, kind, cmd, kind != "c-plain", lowfd))

    # ---- chaos ----

    def fault(self, kind, detail=""):
        self.faults[kind] += 1
        self.fault_log.append((now(), kind, detail))
        if self.args.verbose:
            log("fault", kind, detail)

    def chaos(self):
        # A killed daemon leaves new connections on TCP until supervisors start another (10 s):
        # killed less often than the rest, so that most of the run switches.
        kinds = {"kill-client-supervisor": 3, "kill-server-supervisor": 2, "kill-daemon": 1,
                 "stop-daemon": 2, "kill-client": 3, "kill-server": 2}
        while not self.stop_chaos.wait(self.rng.uniform(0.2, 1.5)):
            kind = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
            try:
                getattr(self, "chaos_" + kind.replace("-", "_"))(kind)
            except Exception as e:  # a fault that could not be injected is just skipped
                log("chaos:", kind, "skipped:", repr(e))
            try:
                self.restart_servers()
            except Exception as e:  # a server that cannot come back (30 s) fails the soak
                self.problems.append(f"ERROR restarting a server: {e!r}")
                self.counts[("server", "?", "ERROR")] += 1

    def live_clients(self, supervised=None):
        return [c for c in self.clients if c.proc.poll() is None and not c.killed and
                (supervised is None or c.supervised == supervised)]

    def chaos_kill_client_supervisor(self, kind):
        victims = [c for c in self.live_clients(True) if c.supervisor_killed_at is None]
        if victims:
            c = self.rng.choice(victims)
            if c.program_pid() is None:
                return
            c.supervisor_killed_at = now()
            kill(c.proc.pid)
            self.fault(kind, f"{c.kind} trace {c.proc.pid}")

    def chaos_kill_server_supervisor(self, kind):
        victims = [s for s in self.servers.values()
                   if s.supervised and s.name not in IMMUNE and s.unsupervised_since is None
                   and s.proc.poll() is None]
        if victims:
            s = self.rng.choice(victims)
            s.unsupervised_since = now()
            kill(s.proc.pid)
            s.proc.wait(timeout=10)
            # Restart it under a new supervisor a few seconds later (as a real operator would).
            s.restart_at = now() + self.rng.uniform(1, 5)
            self.fault(kind, s.name)

    def chaos_kill_daemon(self, kind):
        with self.daemon_stopped:
            pid = daemon_pid()
            if pid and kill(pid):
                self.daemon_kills += 1
                self.fault(kind, str(pid))

    def chaos_stop_daemon(self, kind):
        with self.daemon_stopped:
            pid = daemon_pid()
            if pid and kill(pid, signal.SIGSTOP):
                self.fault(kind, str(pid))
                time.sleep(self.rng.uniform(0.1, 3.0))
                kill(pid, signal.SIGCONT)

    def chaos_kill_client(self, kind):
        victims = self.live_clients()
        if victims:
            c = self.rng.choice(victims)
            pid = c.program_pid()
            if pid:
                c.killed = True
                kill(pid)
                self.fault(kind, f"{c.kind} {pid}")

    def chaos_kill_server(self, kind):
        victims = [s for s in self.servers.values()
                   if s.name not in IMMUNE and alive(s.program) and
                   getattr(s, "restart_at", None) is None]
        if victims:
            s = self.rng.choice(victims)
            s.kill_program()
            s.restart_at = now() + self.rng.uniform(0.3, 2.0)
            self.fault(kind, s.name)

    def restart_servers(self, force=False):
        for s in self.servers.values():
            at = getattr(s, "restart_at", None)
            if at is not None and (force or now() >= at):
                if alive(s.program):  # supervisor killed: end the unsupervised program first
                    s.kill_program()
                s.restart()
                s.restart_at = None

    # ---- verdicts ----

    def explained(self, client, x):
        """Is this failure explained by a fault injected on the connection's path?"""
        t0, t1 = float(x["t0"]), float(x["t1"])
        if client.supervisor_killed_at is not None and t0 - 0.5 <= client.supervisor_killed_at \
                <= t1 + 0.5:
            return True
        if client.lowfd and x["errno"] in ("EMFILE", "ENFILE"):
            return True
        s = self.servers.get(x["target"])
        if s is None:
            return False
        if s.was_down(t0, t1):
            return True
        return any(kind == "kill-server-supervisor" and detail == s.name and
                   t0 - 0.5 <= t <= t1 + 0.5 for t, kind, detail in self.fault_log)

    def collect(self, client):
        with open(client.out_path) as f:
            lines = f.read().splitlines()
        code = client.proc.returncode
        if code != 0 and not client.killed and client.supervisor_killed_at is None:
            # A client that could not run at all would otherwise go unnoticed.
            self.problems.append(f"ERROR {client.kind}: exit status {code}: {lines[-3:]}")
            self.counts[(client.kind, "?", "ERROR")] += 1
        os.unlink(client.out_path)
        for line in lines:
            self.note_message(f"client {client.kind}", line)
            if line.startswith("hung "):
                self.problems.append(f"HUNG {client.kind}: {line}")
                self.counts[(client.kind, "?", "HUNG")] += 1
                continue
            if not line.startswith("conn "):
                continue
            x = dict(kv.split("=", 1) for kv in line.split()[1:])
            self.conns += 1
            verdict = self.verdict(client, x)
            self.counts[(client.kind, x["target"], verdict)] += 1
            if verdict == "failed":
                self.failures[f'{x["stage"]}:{x["errno"]}'] += 1
            if verdict in ("LOST", "MISPAIRED", "HUNG"):
                self.problems.append(f"{verdict} {client.kind}: {line}")
            if verdict in ("switched", "relayed", "tcp", "unix"):
                self.bytes_verified += int(x["sent"]) + int(x["recvd"])
            else:
                self.bytes_verified += int(x["recvd"])

    def note_message(self, who, line):
        """Counts what slipstream-trace printed; a Python traceback or a sanitizer report is an
        error."""
        if line.startswith("slipstream-trace:"):
            self.messages[re.sub(r"\d+", "N", line)[:140]] += 1
        elif "Traceback" in line or "Sanitizer" in line or "runtime error:" in line:
            self.problems.append(f"ERROR {who}: {line}")
            self.counts[(who, "?", "ERROR")] += 1

    def verdict(self, client, x):
        res = x["res"]
        if res == "ok":
            c, s = x["cdom"], x["sdom"]
            if c == "unix" and s == "unix":
                return "switched"
            if c == "unix" and s == "tcp":
                return "relayed"
            if c == "tcp" and s == "tcp":
                return "tcp"
            if s == "-":  # redis: the server's side is not reported
                return "unix" if c == "unix" else "tcp"
            return "MISPAIRED"  # a TCP client whose server holds an AF_UNIX end
        if res == "mispair":
            return "MISPAIRED"
        if res == "fail":
            if x["errno"] == "ETIMEDOUT":
                return "HUNG"
            return "failed" if self.explained(client, x) else "LOST"
        return "LOST"  # corrupt, badcall

    def reap_clients(self, final=False):
        for c in list(self.clients):
            if c.done() or (final and c.killed and c.proc.poll() is not None):
                self.clients.remove(c)
                if c.killed:
                    self.clients_killed += 1
                self.collect(c)
                self.finished.append(c.kind)
            elif now() - c.started > 300:
                c.kill_all()
                c.proc.wait(timeout=10)
                self.problems.append(f"HUNG {c.kind}: client process ran for 300 s")
                self.counts[(c.kind, "?", "HUNG")] += 1
                self.clients.remove(c)
                self.collect(c)

    # ---- baseline and the end ----

    def survivors(self):
        """{name: pid} of the processes whose resources must come back to baseline."""
        out = {}
        for name in IMMUNE:
            s = self.servers[name]
            out[f"{name} program"] = s.program
            out[f"{name} slipstream-trace"] = s.proc.pid
        pid = daemon_pid()
        if pid:
            out["slipstreamd"] = pid
        return out

    def measure(self):
        return {name: (pid, usage(pid)) for name, pid in self.survivors().items()}

    def warm_up(self):
        """One client of each kind with no fault, so lazily allocated state exists at baseline."""
        for kind in self.CLIENT_KINDS:
            self.spawn_client(kind)
        deadline = now() + 120
        while self.clients and now() < deadline:
            self.reap_clients()
            time.sleep(0.1)
        time.sleep(SETTLE_S)

    def check_leaks(self, base, end):
        bad = []
        for name, (pid, before) in base.items():
            pid2, after = end.get(name, (None, None))
            if before is None or after is None:
                log(f"  {name}: gone at the end (pid {pid} -> {pid2})")
                bad.append(name)
                continue
            if pid2 != pid and name != "slipstreamd":
                log(f"  {name}: restarted during the run (pid {pid} -> {pid2}), not compared")
                continue
            # A daemon started during the run serves the same supervisors and listeners at the
            # end as the first one did at baseline: it is held to the same figures.
            fds, threads, rss, kinds = after
            pids = str(pid) if pid2 == pid else f"{pid} -> {pid2}"
            line = (f"  {name} (pid {pids}): fds {before[0]} -> {fds} (+ pidfds {before[3][PIDFD]}"
                    f" -> {kinds[PIDFD]}), threads {before[1]} -> {threads}, RSS {before[2]} -> "
                    f"{rss} KiB")
            problem = []
            if fds > before[0] + FD_SLACK:
                grown = {k: v - before[3][k] for k, v in kinds.items() if v > before[3][k]}
                problem.append(f"fds {grown}")
            if kinds[PIDFD] > PIDFD_CACHE:
                problem.append("pidfds beyond the cache's bound")
            # Go keeps the OS threads it made for blocking calls; the others must come back.
            if threads > before[1] + THREAD_SLACK and not name.startswith("go program"):
                problem.append("threads")
            if rss > max(before[2] * 2, before[2] + RSS_SLACK_KIB):
                problem.append("RSS")
            log(line + (f"  LEAK: {', '.join(problem)}" if problem else ""))
            if problem:
                bad.append(line)
        return bad

    def run(self):
        duration = self.args.seconds
        log(f"soak: {duration:.0f} s, seed {self.args.seed}, runtime dir {harness.RUNTIME_DIR}")
        self.make_servers()
        self.warm_up()
        warm = sum(self.counts.values())
        if warm < len(self.CLIENT_KINDS):
            self.problems.append(f"ERROR warm-up: {warm} connections")
        self.counts.clear()
        self.failures.clear()
        base = self.measure()
        log("baseline:", {k: v[1][:3] if v[1] else None for k, v in base.items()})
        chaos = threading.Thread(target=self.chaos, daemon=True)
        start = now()
        if not self.args.self_check:
            chaos.start()
        while now() - start < duration:
            while len(self.live_clients()) < self.args.clients:
                self.spawn_client()
            self.reap_clients()
            time.sleep(0.05)
        self.stop_chaos.set()
        if chaos.is_alive():
            chaos.join(timeout=30)
        pid = daemon_pid()
        if pid:
            kill(pid, signal.SIGCONT)
        deadline = now() + HANG_S + 30
        while self.clients and now() < deadline:
            self.reap_clients()
            time.sleep(0.1)
        for c in self.clients:
            self.problems.append(f"HUNG {c.kind}: client still running after the run")
            self.counts[(c.kind, "?", "HUNG")] += 1
            c.kill_all()
        self.reap_clients(final=True)
        self.restart_servers(force=True)
        for s in self.servers.values():
            if s.supervised and s.unsupervised_since is not None:
                s.kill_program()
                s.restart()
        elapsed = now() - start
        # A daemon killed near the end is started again by the supervisors within 10 s; every
        # supervised listener must be registered again before the survivors are compared.
        deadline = now() + 40
        while now() < deadline and not all(s.registered() for s in self.servers.values()
                                           if s.supervised):
            time.sleep(0.2)
        time.sleep(SETTLE_S)
        end = self.measure()
        self.server_stalls()
        leaks = self.check_leaks(base, end)
        for s in self.servers.values():
            s.stop()
        pid = daemon_pid()
        if pid:
            kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        zombies = zombies_under([os.getpid()] + ([pid] if pid else []))
        return self.report(elapsed, leaks, zombies)

    def server_stalls(self):
        for name in self.servers:
            try:
                with open(os.path.join(self.tmp, f"server-{name}.out")) as f:
                    for line in f:
                        self.note_message(f"server {name}", line.rstrip("\n"))
                        if line.startswith("stall "):
                            self.problems.append(f"HUNG server {name}: {line.strip()}")
                            self.counts[("server", name, "HUNG")] += 1
            except FileNotFoundError:
                pass

    def report(self, elapsed, leaks, zombies):
        verdicts = ("switched", "relayed", "unix", "tcp", "failed", "LOST", "MISPAIRED", "HUNG",
                    "ERROR")
        by_kind = collections.defaultdict(collections.Counter)
        by_server = collections.defaultdict(collections.Counter)
        for (kind, server, verdict), n in self.counts.items():
            by_kind[kind][verdict] += n
            by_server[server][verdict] += n
        total = collections.Counter()
        for c in by_kind.values():
            total.update(c)
        print()
        print(f"soak: {elapsed:.0f} s, seed {self.args.seed}; {len(self.finished)} client "
              f"processes ({self.clients_killed} killed by chaos); {self.conns} connections; "
              f"{self.bytes_verified} bytes verified")
        header = "  " + f"{'':10}" + "".join(f"{v:>10}" for v in verdicts)
        print("connections by client kind:")
        print(header)
        for kind in sorted(by_kind):
            print("  " + f"{kind:10}" + "".join(f"{by_kind[kind][v]:>10}" for v in verdicts))
        print("connections by server:")
        print(header)
        for server in sorted(by_server):
            print("  " + f"{server:10}" + "".join(f"{by_server[server][v]:>10}" for v in verdicts))
        print("  " + f"{'total':10}" + "".join(f"{total[v]:>10}" for v in verdicts))
        print("failed (explained) by stage:errno: " +
              ", ".join(f"{k} {v}" for k, v in self.failures.most_common()))
        print("slipstream-trace messages: " + ("; ".join(
            f"{n} x {m}" for m, n in self.messages.most_common(8)) or "none"))
        print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
              + f" (server restarts: "
              + ", ".join(f"{s.name} {s.restarts}" for s in self.servers.values()) + ")")
        print(f"leaks: {len(leaks)}; zombies: {len(zombies)} {zombies if zombies else ''}")
        for p in self.problems[:50]:
            print("  " + p)
        lost, mispaired, hung = total["LOST"], total["MISPAIRED"], total["HUNG"]
        print(f"{lost} lost, {mispaired} mispaired, {hung} hung")
        if total["ERROR"]:
            print(f"{total['ERROR']} client processes failed to run")
        ok = not (lost or mispaired or hung or leaks or zombies or total["ERROR"]) \
            and total["switched"] > 0
        if total["switched"] == 0:
            print("soak: no connection was switched at all")
        if self.args.self_check:
            # Servers c and plain lied on purpose (--sabotage): the verdicts must have seen it.
            caught = lost > 0 and mispaired > 0 and hung > 0
            print("self-check: sabotage " + ("detected" if caught else "NOT detected"))
            return 0 if caught else 1
        return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seconds", type=float)
    g.add_argument("--minutes", type=float)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--clients", type=int, default=4, help="client processes at a time")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--self-check", action="store_true",
                   help="no chaos; servers c and plain corrupt, mispair, cut or delay every 4th "
                        "reply on purpose: exit 0 only if the soak reports lost, mispaired and "
                        "hung connections")
    args = p.parse_args()
    args.seconds = args.minutes * 60 if args.minutes else (args.seconds or 60)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if not os.path.exists(harness.TRACE_BIN):
        sys.exit(f"soak: slipstream-trace not built at {harness.TRACE_BIN}")
    soak = Soak(args)
    code = 1
    try:
        code = soak.run()
    finally:
        for c in soak.clients:
            c.kill_all()
        for s in getattr(soak, "servers", {}).values():
            try:
                s.stop()
            except Exception:
                pass
        harness.stop_daemon()
        if code == 0:
            shutil.rmtree(soak.tmp, ignore_errors=True)
        else:  # the servers' and clients' own output, for whoever looks into the failure
            log(f"kept {soak.tmp}")
    sys.exit(code)


if __name__ == "__main__":
    main()

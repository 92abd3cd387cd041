"""Process control for the benchmark harness: start, wait for readiness, stop, and leave nothing
behind.

Every process the harness starts gets its own session (so a whole tree can be signalled at once)
and carries SLIPSTREAM_BENCH_RUN=<run id> in its environment. The harness also makes itself a
child subreaper, so descendants that detach (slipstreamd, started on demand by slipstream-trace,
daemonizes) are re-parented to it rather than to init. At exit, cleanup() stops what is still
running and then ends every remaining process whose environment carries this run's id — and only
those: processes of other users of the machine are never touched.
"""

import ctypes
import os
import shlex
import signal
import subprocess
import time

PR_SET_CHILD_SUBREAPER = 36
RUN_ENV = "SLIPSTREAM_BENCH_RUN"


class SampleError(Exception):
    """A measurement could not be taken. Carries the command and symptom for the report."""

    def __init__(self, symptom, command=None, log_tail=""):
        super().__init__(symptom)
        self.symptom = symptom
        self.command = command
        self.log_tail = log_tail


class NotSwitched(SampleError):
    """A sample whose connections did not switch (or switched where they must not): the variant
    is excluded from the rest of the run."""


def quote(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Procs:
    def __init__(self, run_id, log_dir, base_env):
        self.run_id = run_id
        self.log_dir = log_dir
        self.env = dict(base_env)
        self.env[RUN_ENV] = run_id
        self.live = []  # (Popen, name) of background processes still to stop
        self.counter = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # without it, cleanup() still finds detached processes by their environment

    def _log_paths(self, name):
        self.counter += 1
        stem = os.path.join(self.log_dir, f"{self.counter:04d}-{name}")
        return stem + ".out", stem + ".err"

    def _merged_env(self, env):
        merged = dict(self.env)
        if env:
            merged.update(env)
        return merged

    def start(self, argv, name, env=None, cwd=None):
        """Starts a background process (a server); its output goes to log files."""
        out_path, err_path = self._log_paths(name)
        with open(out_path, "w") as out, open(err_path, "w") as err:
            out.write(f"# {quote(argv)}\n")
            out.flush()
            p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 env=self._merged_env(env), cwd=cwd, start_new_session=True)
        p.argv = argv
        p.out_path, p.err_path = out_path, err_path
        self.live.append((p, name))
        return p

    def run(self, argv, name, timeout, env=None, cwd=None, check=True):
        """Runs a foreground command (a client) to completion within `timeout` seconds.

        Returns (stdout, stderr, returncode). A timeout kills the command's whole session and
        raises SampleError; so does a non-zero exit when check is set.
        """
        out_path, err_path = self._log_paths(name)
        with open(out_path, "w+") as out, open(err_path, "w+") as err:
            p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 env=self._merged_env(env), cwd=cwd, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_session(p)
                raise SampleError(f"timed out after {timeout:.0f} s (hang?)", quote(argv), tail(err_path))
            finally:
                # A client that exited may have left children in its session.
                self._kill_session(p, only_if_alive_members=True)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if check and rc != 0:
            what = f"exit status {rc}" if rc > 0 else f"killed by signal {-rc}"
            raise SampleError(what, quote(argv), stderr[-2000:])
        return stdout, stderr, rc

    @staticmethod
    def _kill_session(p, only_if_alive_members=False):
        try:
            if only_if_alive_members:
                os.killpg(p.pid, 0)  # raises if the group is empty
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        """Asks a background process to exit with `sig` (slipstream-trace forwards it to the
        program and writes its --stats on the way out); kills its session if it does not."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_session(p, only_if_alive_members=True)
        self.live = [(q, n) for (q, n) in self.live if q is not p]
        return p.returncode

    def alive(self, p):
        return p.poll() is None

    def cleanup(self):
        """Stops every background process, then every leftover process of this run."""
        for p, _ in list(self.live):
            self.stop(p, timeout=5)
        return self.reap_leftovers()

    def leftover_pids(self):
        """Processes (other than this one) whose environment carries this run's id."""
        mine = os.getpid()
        needle = f"{RUN_ENV}={self.run_id}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == mine:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def reap_leftovers(self, grace=3.0):
        """Ends leftover processes of this run; returns "pid: command" for each, for the report."""
        pids = self.leftover_pids()
        if not pids:
            return []
        described = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    described.append(f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                described.append(str(pid))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and self.leftover_pids():
            self._reap_zombies()
            time.sleep(0.1)
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap_zombies()
        return described

    @staticmethod
    def _reap_zombies():
        # As subreaper we inherit orphans; collect their exit status so none stays a zombie.
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def tcp_listening(port, pid="self"):
    """True if some socket in the network namespace of process `pid` (default: ours) listens on
    TCP `port` (any address).

    Reading /proc/net/tcp{,6} instead of connecting keeps readiness checks invisible to the
    servers (NPtcp's receiver, for one, takes the first connection as its test partner)."""
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def unix_listening(path, pid="self"):
    """True if a listening AF_UNIX socket is bound to `path` (flag __SO_ACCEPTCON in /proc/net/unix),
    as the network namespace of process `pid` (default: ours) lists them."""
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    return True
    except OSError:
        pass
    return False


def wait_until(predicate, timeout, proc=None, what="condition"):
    """Polls `predicate` until true; fails early if `proc` exits meanwhile."""
    deadline = time.time() + timeout
    delay = 0.01
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise SampleError(f"exited with status {proc.returncode} before {what}",
                              quote(proc.argv), tail(proc.err_path) or tail(proc.out_path))
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise SampleError(f"no {what} after {timeout:.0f} s", quote(proc.argv) if proc else None,
                      tail(proc.err_path) if proc else "")

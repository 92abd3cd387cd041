"""Issue 10's benchmark: memcached between two Docker containers (the paper's Figure 10; root only).

An image made with `docker import` (no registry; tests/integration/docker_support.py) holds
memcached, ss-memcload, slipstream-trace, slipstreamd and the preload library with their shared
libraries. Two containers on Docker's default bridge, the server's on the server CPU and the
client's on the client CPU (--cpuset-cpus). The run's root slipstreamd serves both: its runtime
directory is mounted into each container (docs/containers.md, "Between containers").
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

from ..procs import NotSwitched, SampleError, quote
from ..results import parse_trace_stats
from ..workload import Workload
from .common import tcp_addr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TESTS = os.path.join(REPO, "tests", "integration")
BIN = "/slip/bin"
RUN = "/run/slipstream"  # the daemon's runtime directory, in each container
SHARED = "/shared"       # in each container: the unix variant's socket, the --stats files
PORT = {"plain": 11211, "supervised": 11212}
SERVER_STATS = "stats-server.txt"


def _import_docker_support(ctx):
    """tests/integration's Docker helpers, which read the build and runtime directory from the
    environment when first imported. They import a module of theirs named `harness`, as this
    package is named: it is out of sys.modules while they load, then back."""
    os.environ["SLIPSTREAM_BUILD"] = ctx.build
    os.environ["SLIPSTREAM_RUNTIME_DIR"] = ctx.runtime_env()["SLIPSTREAM_RUNTIME_DIR"]
    ours = {name: sys.modules.pop(name) for name in list(sys.modules)
            if name == "harness" or name.startswith("harness.")}
    sys.path.insert(0, TESTS)
    try:
        import docker_support
        import switch_support
    finally:
        sys.path.remove(TESTS)
        sys.modules.pop("harness", None)
        sys.modules.update(ours)
    return docker_support, switch_support


def _ensure_dockerd(ctx):
    """Starts dockerd if it does not answer, in the host's network namespace (bench/run keeps it
    open), not in the run's private one, which ends with the run."""
    script = f"import sys; sys.path.insert(0, {TESTS!r}); import docker_support; docker_support.ensure_dockerd()"
    argv = [sys.executable, "-c", script]
    fd = os.environ.get("SLIPSTREAM_BENCH_HOST_NETNS_FD")
    if fd:
        argv = ["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", *argv]
    env = {**os.environ, **ctx.runtime_env()}  # the helpers make no runtime directory of their own
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if r.returncode != 0:
        raise SampleError(f"dockerd: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")


class _Exec:
    """A server started in a container with `docker exec`, as Workload.servers holds them."""

    def __init__(self, proc):
        self.proc = proc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Containers(Workload):
    name = "containers"
    description = ("memcached -t 1 and ss-memcload in two Docker containers on the default bridge "
                   "(the paper's Figure 10). slipstream: both under slipstream-trace (memcached in "
                   "hybrid mode), paired across the two namespaces by TCP sequence numbers; "
                   "client-only must stay TCP; unix: memcached -s on a directory mounted into both. "
                   "Every supervised client runs with --stats, and each sample is checked: all its "
                   "connections switched (slipstream), none switched or relayed (client-only).")
    variants = ["tcp", "slipstream", "client-only", "unix"]
    needs_root = "dockerd, a root slipstreamd"
    opt_in = True

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "ops/s", "higher", "operations per second")

    def cases(self):
        return [f"conns={c}" for c in self.p["memcached_conns"]]

    def setup(self):
        self.boxes, self.image, self.ds = [], None, None
        preload = os.path.join(self.ctx.build, "preload-fallback", "libslipstream-preload.so")
        if not os.path.exists(preload):
            raise SampleError(f"{preload} not built: memcached would not run in hybrid mode")
        _ensure_dockerd(self.ctx)
        self.ds, self.ss = _import_docker_support(self.ctx)
        ds = self.ds
        ds.remove_stale_images("slipstream-bench-")
        self.image = f"slipstream-bench-{os.getpid()}"
        ds.build_image(self.image, [], extra={
            "memcached": shutil.which("memcached"), "ss-memcload": self.ctx.bench_program("ss-memcload")})
        self.ctx.start_daemon(self.name)
        self.shared = self.ctx.path("containers-shared")
        os.makedirs(self.shared, exist_ok=True)
        os.chmod(self.shared, 0o777)
        runtime = self.ctx.runtime_env()["SLIPSTREAM_RUNTIME_DIR"]

        def box(side):
            cpu = self.ctx.cpu_for(side)
            pin = ["--cpuset-cpus", str(cpu)] if cpu is not None else []
            cid = ds.docker("run", "-d", "--rm", "--network", "bridge", *pin, "--cap-add", "SYS_PTRACE",
                            "-v", f"{runtime}:{RUN}", "-e", f"SLIPSTREAM_RUNTIME_DIR={RUN}",
                            "-v", f"{self.shared}:{SHARED}", self.image, "/bin/sleep", "3600").stdout.strip()
            self.boxes.append(cid)
            return cid

        self.server_box, self.client_box = box("server"), box("client")
        host = ds.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", self.server_box).stdout.strip()
        memcached = [f"{BIN}/memcached", "-m", "1024", "-t", "1", "-c", "4096", "-u", "root"]
        trace = [f"{BIN}/slipstream-trace", "--stats", "-o", f"{SHARED}/{SERVER_STATS}", "--"]
        servers = {"plain": memcached + ["-U", "0", "-p", str(PORT["plain"])],
                   "supervised": trace + memcached + ["-U", "0", "-p", str(PORT["supervised"])],
                   "unix": memcached + ["-s", f"{SHARED}/memcached.sock", "-a", "0777"]}
        for key, argv in servers.items():
            cmd = ["docker", "exec", self.server_box, *argv]
            self.ctx.results.command(self.name, key, "server", quote(cmd))
            self.servers[key] = _Exec(self.ctx.procs.start(cmd, f"{self.name}-{key}-server"))
        self.addr = {"tcp": tcp_addr(PORT["plain"], host), "slipstream": tcp_addr(PORT["supervised"], host),
                     "client-only": tcp_addr(PORT["plain"], host), "unix": f"unix:{SHARED}/memcached.sock"}
        for variant in ("tcp", "slipstream", "unix"):  # waits for each server and stores every key
            self._ready(variant)

    def _ready(self, variant, seconds=10):
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self._load(variant, 1, 0.05, 1, ["--preload"])
            except SampleError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _supervisors(self):
        return {s["pid"] for s in self.ss.daemon_status().get("supervisors", [])}

    def _load(self, variant, conns, seconds, seed, extra=(), case=None, rep=None):
        """One ss-memcload run in the client container; returns its operations per second."""
        argv = [f"{BIN}/ss-memcload", self.addr[variant], "--conns", str(conns), "--time", str(seconds),
                "--seed", str(seed), *extra]
        stats = None
        if variant in ("slipstream", "client-only"):
            # Gated: the program connects only once the daemon lists its supervisor, which then has
            # the list of supervised listeners (switch_support.Gated.start_program).
            stats = os.path.join(self.shared, f"stats-{variant}.txt")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stats)
            argv = [f"{BIN}/slipstream-trace", "--stats", "-o", f"{SHARED}/{os.path.basename(stats)}",
                    "--", "sh", "-c", 'read _; exec "$@"', "sh", *argv]
            before = self._supervisors()
        limit = 60 + seconds
        # Bounded inside the container too: killing `docker exec` would leave its command running.
        cmd = ["docker", "exec", "-i", self.client_box, "timeout", "-s", "KILL", str(int(limit)), *argv]
        if rep is not None and rep >= 0:
            self.ctx.results.command(self.name, variant, "client", quote(cmd))
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            if stats:
                deadline = time.monotonic() + 20
                while not self._supervisors() - before:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SampleError(f"{variant}: no supervisor reached slipstreamd", quote(cmd))
                    time.sleep(0.02)
            out, err = proc.communicate("\n", timeout=limit + 10)
        except subprocess.TimeoutExpired:
            raise SampleError(f"no result within {limit + 10:.0f} s", quote(cmd))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SampleError(f"exit status {proc.returncode}", quote(cmd), err[-500:])
        result = json.loads(lines[-1])
        if result.get("errors"):
            raise SampleError(f"ss-memcload reported errors: {result}", quote(cmd))
        if stats:
            self._check_switched(variant, conns + (1 if "--preload" in extra else 0), stats, cmd)
            if rep is not None and rep < 0:  # as Workload.client: the warm-up's go in the report
                self.ctx.results.add_trace_stats(self.name, case, variant, rep, "client", stats)
        return result["ops_per_s"]

    def _check_switched(self, variant, made, path, cmd):
        """slipstream: every connection switched (none relayed or left on TCP); client-only: none
        switched or relayed (the library may leave them on TCP in-process, unseen by the
        supervisor)."""
        try:
            with open(path) as f:
                counts = parse_trace_stats(f.read())
        except OSError as e:
            raise SampleError(f"no --stats from slipstream-trace: {e}", quote(cmd))
        got = (counts["switched"], counts["relayed"], counts["left_on_tcp"])
        want = (made, 0, 0) if variant == "slipstream" else (0, 0)
        if got[:len(want)] != want:
            raise NotSwitched(f"{variant}: (switched, relayed, left on TCP) {got}, expected {want}",
                              quote(cmd), counts["raw"])

    def measure(self, case, variant, rep):
        conns = int(case.split("=")[1])
        t = self.p["memcached_time"] if rep >= 0 else 0.2
        return [(case, "rate", None, self._load(variant, conns, t, 1000 + max(rep, 0), case=case, rep=rep))]

    def teardown(self):
        """Each step on its own: one that fails does not keep the others from running."""
        steps = []
        if getattr(self, "boxes", None):
            # SIGTERM to every process of the server's container but its init (sleep): the
            # supervised memcached's slipstream-trace writes its --stats on the way out.
            steps.append(lambda: self.ds.docker("exec", self.server_box, "kill", "-TERM", "-1", check=False))
            steps.append(self._server_stats)
        steps += [lambda cid=cid: self.ds.docker("rm", "-f", cid, check=False) for cid in getattr(self, "boxes", [])]
        steps += [lambda s=s: self.ctx.procs.stop(s.proc) for s in self.servers.values()]
        if getattr(self, "image", None):
            steps.append(lambda: self.ds.remove_image(self.image))
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 -- reported; the other steps still run
                self.ctx.results.note(self.name, f"teardown step failed: {type(e).__name__}: {e}")

    def _server_stats(self):
        """The supervised server's --stats, once its slipstream-trace has exited (at most 5 s)."""
        server = self.servers.get("supervised")
        if server and server.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=5)
        self.ctx.results.add_trace_stats(self.name, None, "supervised", None, "server",
                                         os.path.join(self.shared, SERVER_STATS))

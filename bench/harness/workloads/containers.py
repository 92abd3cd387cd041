"""Issue 10's benchmark: memcached between two Docker containers (the paper's Figure 10; root only).

An image made with `docker import` (no registry; tests/integration/docker_support.py) holds
memcached, ss-memcload, slipstream-trace, slipstreamd and the preload library with their shared
libraries. Two containers on Docker's default bridge, the server's on the server CPU and the load's
on the client CPU (--cpuset-cpus). One root slipstreamd of the run serves both: its runtime
directory is mounted into each container (docs/containers.md, "Between containers").
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from ..procs import SampleError, quote
from ..workload import Workload

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TESTS = os.path.join(REPO, "tests", "integration")
BIN = "/slip/bin"
RUN = "/run/slipstream"  # the daemon's runtime directory, in each container
SHARED = "/shared"       # the directory of the unix variant's socket, in each container
PORT = {"tcp": 11211, "slipstream": 11212}
STATS = re.compile(r"switched (\d+), relayed (\d+), left on TCP (\d+)")


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


def _ensure_dockerd():
    """Starts dockerd if it does not answer, in the host's network namespace (bench/run keeps it
    open), not in the run's private one, which ends with the run."""
    script = f"import sys; sys.path.insert(0, {TESTS!r}); import docker_support; docker_support.ensure_dockerd()"
    argv = [sys.executable, "-c", script]
    fd = os.environ.get("SLIPSTREAM_BENCH_HOST_NETNS_FD")
    if fd:
        argv = ["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SampleError(f"dockerd: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")


class Containers(Workload):
    name = "containers"
    description = ("memcached -t 1 and ss-memcload in two Docker containers on the default bridge "
                   "(the paper's Figure 10). slipstream: both under slipstream-trace (memcached in "
                   "hybrid mode), paired across the two namespaces by TCP sequence numbers; "
                   "client-only must stay TCP; unix: memcached -s on a directory mounted into both. "
                   "Every slipstream sample is checked to have switched all its connections.")
    variants = ["tcp", "slipstream", "client-only", "unix"]
    needs_root = "dockerd, a root slipstreamd"

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "ops/s", "higher", "operations per second")

    def cases(self):
        return [f"conns={c}" for c in self.p["memcached_conns"]]

    def setup(self):
        self.boxes, self.image, self.procs = [], None, []
        _ensure_dockerd()
        self.ds, self.ss = _import_docker_support(self.ctx)
        ds = self.ds
        ds.remove_stale_images("slipstream-bench-")
        self.image = f"slipstream-bench-{os.getpid()}"
        ds.build_image(self.image, [], extra={
            "memcached": shutil.which("memcached"), "ss-memcload": self.ctx.bench_program("ss-memcload")})
        runtime = self.ctx.runtime_env()["SLIPSTREAM_RUNTIME_DIR"]
        self.ctx.procs.run([self.ss.DAEMON_BIN, "--idle-exit", "600"], f"{self.name}-slipstreamd", 30,
                           env=self.ctx.runtime_env())
        self.shared = shared = self.ctx.path("containers-shared")
        os.makedirs(shared, exist_ok=True)
        os.chmod(shared, 0o777)

        def box(side):
            cpu = self.ctx.cpu_for(side)
            pin = ["--cpuset-cpus", str(cpu)] if cpu is not None else []
            cid = ds.docker("run", "-d", "--rm", "--network", "bridge", *pin, "--cap-add", "SYS_PTRACE",
                            "-v", f"{runtime}:{RUN}", "-e", f"SLIPSTREAM_RUNTIME_DIR={RUN}",
                            "-v", f"{shared}:{SHARED}", self.image, "/bin/sleep", "3600").stdout.strip()
            self.boxes.append(cid)
            return cid

        self.server, self.loader = box("server"), box("client")
        host = ds.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", self.server).stdout.strip()
        memcached = [f"{BIN}/memcached", "-m", "1024", "-t", "1", "-c", "4096", "-u", "root"]
        trace = [f"{BIN}/slipstream-trace", "--"]
        servers = {"tcp": memcached + ["-U", "0", "-p", str(PORT["tcp"])],
                   "slipstream": trace + memcached + ["-U", "0", "-p", str(PORT["slipstream"])],
                   "unix": memcached + ["-s", f"{SHARED}/memcached.sock", "-a", "0777"]}
        for key, argv in servers.items():
            cmd = ["docker", "exec", self.server, *argv]
            self.ctx.results.command(self.name, key, "server", quote(cmd))
            self.procs.append(self.ctx.procs.start(cmd, f"{self.name}-{key}-server"))
        self.addr = {"tcp": f"tcp:{host}:{PORT['tcp']}", "slipstream": f"tcp:{host}:{PORT['slipstream']}",
                     "client-only": f"tcp:{host}:{PORT['tcp']}", "unix": f"unix:{SHARED}/memcached.sock"}
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
        """One ss-memcload run in the load container; returns its operations per second."""
        argv = [f"{BIN}/ss-memcload", self.addr[variant], "--conns", str(conns), "--time", str(seconds),
                "--seed", str(seed), *extra]
        stats = None
        if variant in ("slipstream", "client-only"):
            # Gated: the program connects only once the daemon lists its supervisor, which then has
            # the list of supervised listeners (switch_support.Gated.start_program).
            stats = f"stats-{variant}.txt"  # in the shared directory
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.shared, stats))
            argv = [f"{BIN}/slipstream-trace", "--stats", "-o", f"{SHARED}/{stats}", "--", "sh", "-c",
                    'read _; exec "$@"',
                    "sh", *argv]
            before = self._supervisors()
        cmd = ["docker", "exec", "-i", self.loader, *argv]
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
            out, err = proc.communicate("\n", timeout=120 + seconds)
        except subprocess.TimeoutExpired:
            raise SampleError(f"no result within {120 + seconds:.0f} s", quote(cmd))
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
            path = os.path.join(self.shared, stats)
            self._check_switched(variant, conns + (1 if "--preload" in extra else 0), path, cmd)
            if rep is not None and rep < 0:  # as Workload.client: the warm-up's go in the report
                self.ctx.results.add_trace_stats(self.name, case, variant, rep, "client", path)
        return result["ops_per_s"]

    def _check_switched(self, variant, made, path, cmd):
        """slipstream: every connection switched (none relayed or left on TCP); client-only: none
        switched or relayed (the library may leave them on TCP in-process, unseen by the
        supervisor)."""
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise SampleError(f"no --stats from slipstream-trace: {e}", quote(cmd))
        m = STATS.search(text)
        got = tuple(int(g) for g in m.groups()) if m else None
        want = (made, 0, 0) if variant == "slipstream" else (0, 0)
        if got is None or got[:len(want)] != want:
            raise SampleError(f"(switched, relayed, left on TCP) {got}, expected {want}", quote(cmd), text)

    def measure(self, case, variant, rep):
        conns = int(case.split("=")[1])
        t = self.p["memcached_time"] if rep >= 0 else 0.2
        return [(case, "rate", None, self._load(variant, conns, t, 1000 + max(rep, 0), case=case, rep=rep))]

    def teardown(self):
        for cid in getattr(self, "boxes", []):
            self.ds.docker("rm", "-f", cid, check=False)
        for p in getattr(self, "procs", []):
            self.ctx.procs.stop(p)
        if getattr(self, "image", None):
            self.ds.remove_image(self.image)

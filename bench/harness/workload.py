"""The workload interface, long-running servers, and the interleaved measurement loop."""

import os
import signal

from .context import SERVER_TRACE_ARGS, VARIANT_ORDER, VARIANT_TRACE_ARGS, VARIANTS
from .procs import NotSwitched, SampleError, quote, tcp_listening, unix_listening, wait_until

# Two failures of the same (case, variant) exclude it for the rest of the run: a variant that
# hangs would otherwise cost its timeout in every repetition.
MAX_FAILURES = 2


class Server:
    """One server instance, plain or under slipstream-trace, ready when it listens."""

    def __init__(self, wl, key, argv, supervised, tcp_port=None, unix_path=None, user=None,
                 stop_signal=signal.SIGTERM, cwd=None, env=None, start_timeout=30, extra_ready=None,
                 prefix=()):
        self.wl, self.key, self.argv = wl, key, argv
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NAME]: runs the whole command there
        self.supervised = supervised
        self.tcp_port, self.unix_path = tcp_port, unix_path
        self.user, self.stop_signal, self.cwd, self.env = user, stop_signal, cwd, env
        self.start_timeout = start_timeout
        self.extra_ready = extra_ready  # optional callable, e.g. pg_isready
        self.proc = None
        self.stats_path = None

    def start(self):
        ctx = self.wl.ctx
        cmd, self.stats_path = ctx.command(self.argv, "server", self.supervised, self.user,
                                           f"{self.wl.name}-{self.key}-server",
                                           SERVER_TRACE_ARGS.get(self.key, ()))
        cmd = self.prefix + cmd
        env = dict(ctx.runtime_env(self.user))
        env.update(self.env or {})
        role = "supervised server" if self.supervised else f"{self.key} server"
        ctx.results.command(self.wl.name, self.key, "server", quote(cmd))
        self.proc = ctx.procs.start(cmd, f"{self.wl.name}-{self.key}-server", env=env, cwd=self.cwd)
        # With a prefix (`ip netns exec NAME`, which execs), read in the server's own network
        # namespace, once the process is in it: until its setns, /proc/PID/net is ours.
        netns_of = self.proc.pid if self.prefix else "self"
        ours = os.readlink("/proc/self/ns/net")

        def moved():
            try:
                return not self.prefix or os.readlink(f"/proc/{self.proc.pid}/ns/net") != ours
            except OSError:
                return False
        if self.tcp_port:
            wait_until(lambda: moved() and tcp_listening(self.tcp_port, netns_of), self.start_timeout, self.proc,
                       f"{role} listening on TCP port {self.tcp_port}")
        if self.unix_path:
            wait_until(lambda: moved() and unix_listening(self.unix_path, netns_of), self.start_timeout, self.proc,
                       f"{role} listening on {self.unix_path}")
        if self.extra_ready:
            wait_until(self.extra_ready, self.start_timeout, self.proc, f"{role} ready")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        ctx = self.wl.ctx
        rc = ctx.procs.stop(self.proc, self.stop_signal)
        if self.stats_path:
            ctx.results.add_trace_stats(self.wl.name, None, self.key, None, "server", self.stats_path)
        self.proc = None
        return rc


class Workload:
    name = ""
    description = ""
    variants = ["tcp", "slipstream", "client-only", "server-only", "unix"]
    baseline = "tcp"
    needs_root = ""  # why, if the workload runs only as root (bench/run then leaves it out)
    # Run only when named in --only: what changes the host beyond the run (dockerd and its
    # firewall rules, images) or takes long.
    opt_in = False

    def __init__(self, ctx):
        self.ctx = ctx
        self.chosen = list(self.variants)  # the variants this run measures (set by run_workload)
        self.servers = {}  # "plain" / "supervised" / "unix" -> Server
        self.p = ctx.profile

    # Subclasses implement these.
    def cases(self):
        return [None]

    def declare(self):
        """Declares metrics (units, direction) with self.ctx.results.declare_metric."""

    def setup(self):
        pass

    def measure(self, case, variant, rep):
        """Returns [(case, metric, x, value), ...] for one sample."""
        raise NotImplementedError

    def teardown(self):
        for s in list(self.servers.values()):
            s.stop()

    # Helpers.
    def used_servers(self):
        """The server instances the chosen variants need (plain always: the baseline)."""
        return {VARIANTS[v][0] for v in self.chosen if v in VARIANTS} | {"plain"}

    def server_for(self, variant):
        return self.servers.get(VARIANTS[variant][0])

    def dead_servers(self):
        return [k for k, s in self.servers.items() if s.proc is not None and not s.alive()]

    def client(self, argv, case, variant, rep, timeout, user=None, env=None, check=True, prefix=()):
        """Runs one client command for `variant` (supervised or not), pinned to the client CPU;
        `prefix` goes before the whole command, as Server's."""
        ctx = self.ctx
        supervised = VARIANTS[variant][1] if variant in VARIANTS else False  # "native": plain
        tag = f"{self.name}-{variant}" + (f"-{case}" if case else "")
        tag = "".join(c if c.isalnum() or c in "-_=." else "_" for c in tag)
        # Clients report --stats only in the unrecorded warm-up sample (or with --client-stats):
        # --stats makes slipstream-trace trap socket() too, which would inflate what we measure.
        # Long-running servers always report it; they call socket() only for their listeners.
        with_stats = rep < 0 or ctx.args.client_stats
        cmd, stats = ctx.command(argv, "client", supervised, user, tag if with_stats else None,
                                 VARIANT_TRACE_ARGS.get(variant, ()))
        cmd = list(prefix) + cmd
        ctx.results.command(self.name, variant, "client", quote(cmd))
        run_env = dict(ctx.runtime_env(user))
        run_env.update(env or {})
        self.last_client_stats = None
        try:
            out, err, rc = ctx.procs.run(cmd, tag, timeout, env=run_env, check=check)
        finally:
            if stats:
                self.last_client_stats = ctx.results.add_trace_stats(self.name, case, variant, rep,
                                                                     "client", stats)
        return out, err, rc


def _as_sample_error(e, what):
    """Anything a workload's code raises, as a failure the report can show: a run goes on with the
    next workload whatever one of them raised (docker, a daemon's status, unparsable output)."""
    if isinstance(e, SampleError):
        return e
    return SampleError(f"{what}: {type(e).__name__}: {e}")


def _teardown(wl):
    try:
        wl.teardown()
    except Exception as e:  # noqa: BLE001 -- reported, and the run goes on
        wl.ctx.results.note(wl.name, f"teardown failed: {type(e).__name__}: {e}")


def run_workload(ctx, wl, reps, variants, warmup):
    res = ctx.results
    chosen = [v for v in VARIANT_ORDER if v in variants and v in wl.variants]
    res.declare_workload(wl.name, wl.description, wl.baseline, chosen)
    wl.chosen = chosen
    wl.declare()
    res.log(f"[{wl.name}] setting up ({', '.join(chosen)})")
    try:
        wl.setup()
    except Exception as e:  # noqa: BLE001
        e = _as_sample_error(e, "set-up")
        res.fail(wl.name, None, "setup", None, e)
        res.exclude(wl.name, None, "all", f"set-up failed: {e.symptom}")
        _teardown(wl)
        return
    failures = {}
    excluded = set()

    def measure_one(case, variant, rep):
        label = f"{case} " if case else ""
        try:
            points = wl.measure(case, variant, rep)
        except Exception as e:  # noqa: BLE001
            e = _as_sample_error(e, "sample")
            res.fail(wl.name, case, variant, "warm-up" if rep < 0 else rep, e)
            if isinstance(e, NotSwitched):
                # The variant does not measure what it is named for: no sample of it counts.
                for c in wl.cases():
                    excluded.add((c, variant))
                res.exclude(wl.name, None, variant, e.symptom)
                return
            if rep < 0:
                return
            failures[(case, variant)] = failures.get((case, variant), 0) + 1
            if failures[(case, variant)] >= MAX_FAILURES:
                excluded.add((case, variant))
                res.exclude(wl.name, case, variant, f"failed {MAX_FAILURES} times; last: {e.symptom}")
            for key in wl.dead_servers():
                s = wl.servers[key]
                users = [v for v in chosen if VARIANTS.get(v, ("",))[0] == key]
                res.note(wl.name, f"the {key} server exited (status {s.proc.returncode}); "
                                  f"excluding {', '.join(users)}. Server command: {quote(s.proc.argv)}")
                for v in users:
                    for c in wl.cases():
                        excluded.add((c, v))
                s.proc = None
            return
        if rep < 0:
            return
        for (c, metric, x, value) in points:
            res.add(wl.name, c, metric, variant, rep, value, x)
        if points:
            c, metric, x, value = points[0]
            unit = res.metrics.get((wl.name, metric), {}).get("unit", "")
            res.log(f"[{wl.name}] rep {rep + 1}/{reps} {label}{variant}: {metric}"
                    f"{'@' + str(x) if x is not None else ''} = {value:.4g} {unit}")

    try:
        if warmup:
            first = wl.cases()[0]
            for variant in chosen:
                if (first, variant) not in excluded:
                    measure_one(first, variant, -1)
        for rep in range(reps):
            # The order rotates with each repetition: no variant always runs first or last.
            order = chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]
            for case in wl.cases():
                for variant in order:
                    if (case, variant) in excluded:
                        continue
                    measure_one(case, variant, rep)
    finally:
        _teardown(wl)

"""bench/run: command line, profiles, and the run from set-up to report."""

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time

from . import machine, report
from .context import VARIANT_ORDER, Context
from .procs import Procs
from .results import Results
from .workload import run_workload
from .workloads import ALL, BY_NAME

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Durations are per sample; every loop in the harness and the programs is bounded by them.
PROFILES = {
    "quick": {
        "reps": 3, "warmup": True,
        "variants": ["tcp", "slipstream", "no-preload", "client-only", "unix", "native"],
        "syscall_time": 0.1,
        "sweep_max": 4 << 20, "sweep_factor": 4, "sweep_time": 0.03,
        "netpipe_repeats": 7, "netpipe_max": 1 << 20,
        "connrate_time": 1.0,
        "nginx_time": 1,
        "memcached_conns": [1, 4, 16, 64], "memcached_time": 0.5,
        "redis_conns": [1, 50], "redis_pipeline": [1, 16], "redis_time": 0.3,
        "pg_scales": [1, 10], "pg_time": 1, "pg_clients": 4,
        "iperf_time": 1,
        "http_conns": [1, 16], "http_time": 0.5,
    },
    "full": {
        "reps": 5, "warmup": True,
        "variants": ["tcp", "slipstream", "no-preload", "client-only", "server-only", "unix", "native"],
        "syscall_time": 0.5,
        "sweep_max": 4 << 20, "sweep_factor": 2, "sweep_time": 0.1,
        "netpipe_repeats": 30, "netpipe_max": 4 << 20,
        "connrate_time": 3.0,
        "nginx_time": 3,
        "memcached_conns": [1, 4, 16, 64], "memcached_time": 2.0,
        "redis_conns": [1, 50], "redis_pipeline": [1, 16], "redis_time": 1.5,
        "pg_scales": [1, 10], "pg_time": 3, "pg_clients": 4,
        "iperf_time": 3,
        "http_conns": [1, 16], "http_time": 2.0,
    },
}

# External programs each workload needs (our own are checked in the build directory).
REQUIRES = {
    "syscalls": ["ss-syscalls"], "sweep": ["ss-sweep"], "netpipe": ["NPtcp"], "connrate": ["ss-connrate"], "nginx": ["nginx", "wrk"],
    "memcached": ["memcached", "ss-memcload"], "redis": ["redis-server", "redis-benchmark"],
    "pgbench": ["pgbench", "/usr/lib/postgresql/15/bin/postgres", "/usr/lib/postgresql/15/bin/initdb"],
    "iperf3": ["iperf3"], "http": ["ss-http"], "netns": ["ss-sweep", "ip", "iptables"],
    "containers": ["memcached", "ss-memcload", "docker", "dockerd", "busybox", "nsenter"],
}

EPILOG = """workloads (in run order):
  syscalls   lmbench-style call costs, native vs slipstream-trace (issue 2)
  sweep      ss-sweep ping-pong + streaming, 1 B - 4 MiB (issue 3)
  netpipe    NetPIPE NPtcp throughput/latency vs size (paper Figure 5)
  connrate   connect + one echo + close per second
  nginx      nginx (1 worker) + wrk -t1 -c10: keep-alive and Connection: close
  memcached  memcached + ss-memcload at 1/4/16/64 connections
  redis      redis-benchmark GET/SET, 1 and 50 connections, -P 1 and 16
  pgbench    PostgreSQL 15 pgbench select-only and TPC-B, scale 1 and 10
  iperf3     iperf3 single stream
  http       Go net/http server and keep-alive client (static, CGO_ENABLED=0)
  netns      sweep between two network namespaces (veth + bridge), as two containers (root; issue
             10; only with --only)
  containers memcached between two Docker containers, the paper's Figure 10 (root; starts dockerd
             if needed, which stays; issue 10; only with --only)

variants: tcp, slipstream (both sides under slipstream-trace; hybrid mode for dynamically linked
programs), no-preload (the same with --no-preload: connrate, nginx, syscalls), client-only,
server-only, unix (native AF_UNIX where the program has it), native and floor (syscalls only: the
bare notification round trip, bench/c/notify_floor.c).

Output: DIR/results.json (machine, every sample, medians, ratios), DIR/summary.md,
DIR/plots/*.png, DIR/logs/ (every command's output). Default DIR: bench/results/<timestamp>/.

examples:
  bench/run --quick                       # about 5 minutes
  bench/run --only memcached,redis --reps 5
  bench/run --build build-bench           # full run (5 repetitions), about 30 minutes
  bench/run --report-only bench/results/20250101-120000
"""


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Slipstream benchmark suite: plain TCP vs slipstream-trace vs native AF_UNIX on loopback. "
                    "Starts and stops every server itself (temporary directories, loopback only; the opt-in "
                    "workloads netns and containers, run only when named in --only, build networks "
                    "and Docker containers).")
    ap.add_argument("--quick", action="store_true", help="short profile: 3 repetitions, shorter runs (~5 min)")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these workloads")
    ap.add_argument("--reps", type=int, metavar="N", help="repetitions per variant (default 5, --quick 3)")
    ap.add_argument("--variants", metavar="V[,V]", help="variants to measure (default: all for the profile)")
    ap.add_argument("--build", default=os.path.join(REPO, "build"), metavar="DIR",
                    help="build directory with supervisor/slipstream-trace and bench/ programs (default build/)")
    ap.add_argument("--trace-bin", metavar="PATH", help="slipstream-trace to use (default DIR/supervisor/slipstream-trace)")
    ap.add_argument("--trace-arg", action="append", default=[], metavar="ARG",
                    help="extra option for every slipstream-trace run, e.g. --trace-arg=--no-preload "
                         "(repeatable)")
    ap.add_argument("--out", metavar="DIR", help="output directory (default bench/results/<timestamp>/)")
    ap.add_argument("--pin", choices=["split", "none"], default="split",
                    help="split: servers on CPU 0, clients on CPU 1 (default); none: no taskset")
    ap.add_argument("--no-trace-stats", action="store_true",
                    help="never pass --stats to slipstream-trace (switch counts are then unknown)")
    ap.add_argument("--client-stats", action="store_true",
                    help="pass --stats to supervised clients in every sample, not only in the warm-up "
                         "(costs a trapped socket() per connection)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the unrecorded warm-up sample per variant (it is also where client --stats come from)")
    ap.add_argument("--host-netns", action="store_true",
                    help="run in the host's network namespace (by default, as root, the run gets a "
                         "private one with at most 1024 TIME_WAIT sockets: see bench/run)")
    ap.add_argument("--report-only", metavar="DIR", help="re-render summary.md and plots from DIR/results.json")
    ap.add_argument("--publish", action="store_true",
                    help="also copy the plots to docs/img/bench/ (for docs/BENCHMARKS.md)")
    args = ap.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in BY_NAME]
        if unknown:
            ap.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    if args.variants:
        unknown = [v for v in args.variants.split(",") if v not in VARIANT_ORDER]
        if unknown:
            ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANT_ORDER)}")
    return args


def publish(out_dir):
    dest = os.path.join(REPO, "docs", "img", "bench")
    os.makedirs(dest, exist_ok=True)
    src = os.path.join(out_dir, "plots")
    for name in sorted(os.listdir(src)):
        if name.endswith(".png"):
            shutil.copy(os.path.join(src, name), os.path.join(dest, name))
    print(f"plots copied to {dest}")


def missing_tools(ctx, names):
    missing = []
    for n in names:
        if n.startswith("ss-"):
            if not os.access(ctx.bench_program(n), os.X_OK):
                missing.append(ctx.bench_program(n))
        elif not (os.access(n, os.X_OK) if os.path.isabs(n) else shutil.which(n)):
            missing.append(n)
    return missing


class Terminated(BaseException):
    """A signal ends the run; not an Exception, which a failing sample or set-up is."""


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        with open(os.path.join(args.report_only, "results.json")) as f:
            doc = json.load(f)
        report.render(doc, args.report_only)
        if args.publish:
            publish(args.report_only)
        print(os.path.join(args.report_only, "summary.md"))
        return 0

    profile_name = "quick" if args.quick else "full"
    profile = dict(PROFILES[profile_name])
    reps = args.reps or profile["reps"]
    variants = args.variants.split(",") if args.variants else profile["variants"]
    if "tcp" not in variants:
        variants = ["tcp"] + variants  # every ratio needs its baseline
    if "slipstream" in variants and "native" not in variants:
        variants.append("native")
    # Opt-in workloads (root-only ones that build networks, start dockerd) run only when named.
    selected = [w for w in ALL if (w.name in args.only.split(",") if args.only else not w.opt_in)]

    started = datetime.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.abspath(args.out or os.path.join(REPO, "bench", "results", stamp))
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    results = Results(os.path.join(out_dir, "run.log"))
    tmp = tempfile.mkdtemp(prefix="slipstream-bench-")
    procs = Procs(f"{stamp}-{os.getpid()}", os.path.join(out_dir, "logs"), os.environ)
    ctx = Context(args, procs, results, tmp, profile)

    if not os.access(ctx.trace_bin, os.X_OK):
        print(f"bench/run: {ctx.trace_bin} not found; build first, e.g.\n"
              f"  cmake -S {REPO} -B {REPO}/build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release && "
              f"cmake --build {REPO}/build-bench -j2 --target slipstream-bench\n  bench/run --build {REPO}/build-bench",
              file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return 2

    # SIGINT, SIGTERM and SIGHUP end the run through the finally below, which stops everything.
    # SIGINT is installed explicitly: a shell starts background jobs with it ignored.
    def on_signal(signum, _frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        raise Terminated(signal.Signals(signum).name)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    mach = machine.describe(REPO, ctx.trace_bin)
    run_info = {"started": started.isoformat(timespec="seconds"), "command": "bench/run " + shlex.join(sys.argv[1:]),
                "profile": profile_name, "reps": reps, "variants": variants, "pin": ctx.pin,
                "settings": profile, "build": ctx.build, "trace_bin": ctx.trace_bin, "trace_args": ctx.trace_args, "out_dir": out_dir,
                "netns": "private, tcp_max_tw_buckets 1024" if os.environ.get("SLIPSTREAM_BENCH_NETNS") else "host"}
    load = mach["loadavg_start"] or [0]
    results.log(f"output in {out_dir}; load average {load}; profile {profile_name}, {reps} repetitions")
    if load[0] > 0.5:
        results.log("warning: the machine is not idle (1-minute load average > 0.5); numbers will be noisy")
    t0 = time.time()
    status = 0
    try:
        for cls in selected:
            wl = cls(ctx)
            if cls.needs_root and os.geteuid() != 0:
                results.declare_workload(cls.name, cls.description, cls.baseline, [])
                results.exclude(cls.name, None, "all", f"needs root: {cls.needs_root}")
                continue
            missing = missing_tools(ctx, REQUIRES.get(cls.name, []))
            if missing:
                results.declare_workload(cls.name, cls.description, cls.baseline, [])
                results.exclude(cls.name, None, "all", f"missing {', '.join(missing)}")
                continue
            warmup = profile["warmup"] and not args.no_warmup
            run_workload(ctx, wl, reps, variants, warmup)
    except (KeyboardInterrupt, Terminated) as e:
        results.log(f"interrupted ({e}); cleaning up and writing partial results")
        status = 130
    finally:
        # Expected here: slipstreamd, which slipstream-trace started on demand for this run.
        run_info["leftovers"] = procs.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        run_info["wall_seconds"] = time.time() - t0
        run_info["loadavg_end"] = machine.loadavg()
        doc = results.to_json(os.path.join(out_dir, "results.json"), run_info, mach)
        report.render(doc, out_dir)
        if args.publish:
            publish(out_dir)
        results.log(f"done in {run_info['wall_seconds']:.0f} s: {out_dir}/summary.md")
    return status

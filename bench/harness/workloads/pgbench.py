"""PostgreSQL 15 (a throwaway cluster) with pgbench: select-only (-S) and TPC-B, two scale factors."""

import os
import pwd
import re
import shutil
import signal

from ..context import VARIANTS
from ..procs import SampleError
from ..workload import Server, Workload

PG_BIN = "/usr/lib/postgresql/15/bin"


class PgBench(Workload):
    name = "pgbench"
    description = ("PostgreSQL 15 with default settings (a temporary cluster, two copies: one plain, one "
                   "under slipstream-trace) and pgbench -c CLIENTS -j 1 -T SECONDS, select-only (-S) and "
                   "TPC-B, scale factors as listed; transactions per second (excluding connection set-up).")

    def declare(self):
        self.ctx.results.declare_metric(self.name, "tps", "tps", "higher", "transactions per second")
        self.ctx.results.declare_metric(self.name, "connect_ms", "ms", "lower", "initial connection time")

    def cases(self):
        return [f"{mode} s={scale}" for mode in ("select-only", "tpc-b") for scale in self.p["pg_scales"]]

    def _as_user(self, argv):
        cmd, _ = self.ctx.command(argv, None, False, self.user)
        return cmd

    def _setup_cmd(self, argv, name, timeout=600):
        self.ctx.procs.run(self._as_user(argv), name, timeout, env=self.env)

    def setup(self):
        ctx = self.ctx
        # PostgreSQL refuses to run as root: as root, server and clients run as the postgres user,
        # each side's slipstream-trace too (so both supervisors share one user's matcher).
        self.user = "postgres" if os.getuid() == 0 else None
        self.dbuser = self.user or pwd.getpwuid(os.getuid()).pw_name
        if self.user:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise SampleError("running as root and there is no postgres user to run PostgreSQL as")
            os.chmod(ctx.tmp, 0o711)
        base = ctx.path("pg")
        os.makedirs(base)
        if self.user:
            os.chown(base, pw.pw_uid, pw.pw_gid)
        self.env = {"PGUSER": self.dbuser}
        self.env.update(ctx.runtime_env(self.user))
        data1, data2 = os.path.join(base, "data-plain"), os.path.join(base, "data-supervised")
        self.sock = {"plain": os.path.join(base, "sock-plain"), "supervised": os.path.join(base, "sock-supervised")}
        for d in self.sock.values():
            os.makedirs(d)
            if self.user:
                os.chown(d, pw.pw_uid, pw.pw_gid)

        ctx.log(f"[{self.name}] initdb and pgbench -i (scales {self.p['pg_scales']})")
        self._setup_cmd([f"{PG_BIN}/initdb", "-D", data1, "-A", "trust", "-U", self.dbuser, "-E", "UTF8",
                         "--no-instructions"], "initdb")
        with open(os.path.join(data1, "postgresql.conf"), "a") as f:
            f.write("\n# bench/run\nlisten_addresses = '127.0.0.1'\nmax_connections = 200\n")
        # Load data once, then copy the stopped cluster: both servers start from identical files.
        port0 = ctx.free_port()
        loader = self._server("loader", data1, port0, self.sock["plain"], supervised=False)
        loader.start()
        try:
            for scale in self.p["pg_scales"]:
                db = f"bench{scale}"
                self._setup_cmd([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port0), db], f"createdb-{db}")
                self._setup_cmd(["pgbench", "-h", "127.0.0.1", "-p", str(port0), "-i", "-q", "-s", str(scale), db],
                                f"pgbench-init-{db}")
        finally:
            loader.stop()
        shutil.copytree(data1, data2, symlinks=True)
        if self.user:
            for root, dirs, files in os.walk(data2):
                for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                    os.lchown(n, pw.pw_uid, pw.pw_gid)

        p1, p2 = ctx.free_port(), ctx.free_port()
        self.port = {"plain": p1, "supervised": p2}
        plain = self._server("plain", data1, p1, self.sock["plain"], supervised=False)
        self.servers = {"plain": plain,
                        "supervised": self._server("supervised", data2, p2, self.sock["supervised"], supervised=True)}
        for s in self.servers.values():
            s.start()
        self.servers["unix"] = plain
        # Warm both servers' caches (the copy starts cold): one short select-only run per database.
        for key in ("plain", "supervised"):
            for scale in self.p["pg_scales"]:
                self._setup_cmd(["pgbench", "-h", "127.0.0.1", "-p", str(self.port[key]), "-n", "-S", "-T", "1",
                                 f"bench{scale}"], f"pgbench-prewarm-{key}-{scale}", timeout=60)

    def _server(self, key, data, port, sockdir, supervised):
        def ready():
            # pg_isready makes a real connection; the server accepts queries once it says so.
            _, _, rc = self.ctx.procs.run(self._as_user([f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1",
                                                         "-p", str(port)]), "pg_isready", 20, env=self.env,
                                          check=False)
            return rc == 0

        argv = [f"{PG_BIN}/postgres", "-D", data, "-p", str(port), "-k", sockdir]
        return Server(self, key, argv, supervised, tcp_port=port, user=self.user, stop_signal=signal.SIGINT,
                      env=self.env, start_timeout=60, extra_ready=ready)

    def teardown(self):
        self.servers.pop("unix", None)
        super().teardown()

    def measure(self, case, variant, rep):
        mode, scale = case.split()
        scale = scale.split("=")[1]
        # pgbench's -T clock includes connecting; a backend fork costs 100+ ms on a busy VM, so the
        # warm-up gets 2 s to do any transaction at all.
        secs = self.p["pg_time"] if rep >= 0 else 2
        server = VARIANTS[variant][0]
        host = self.sock["plain"] if variant == "unix" else "127.0.0.1"
        port = self.port["plain" if server == "unix" else server]
        argv = ["pgbench", "-h", host, "-p", str(port), "-n", "-c", str(self.p["pg_clients"]), "-j", "1",
                "-T", str(secs)] + (["-S"] if mode == "select-only" else []) + [f"bench{scale}"]
        out, err, _ = self.client(argv, case, variant, rep, timeout=120 + 5 * secs, user=self.user, env=self.env)
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        if not m:
            raise SampleError("no tps in pgbench output", " ".join(argv), (out + err)[-800:])
        points = [(case, "tps", None, float(m.group(1)))]
        c = re.search(r"initial connection time = ([0-9.]+) ms", out)
        if c:
            points.append((case, "connect_ms", None, float(c.group(1))))
        return points

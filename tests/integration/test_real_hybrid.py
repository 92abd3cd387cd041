#!/usr/bin/env python3
"""Real dynamically linked programs, server and client each under slipstream-trace, in hybrid mode.

nginx (a master and a forked worker) with curl and bash's /dev/tcp, CPython's http.server with
curl, redis-server with redis-cli
and redis-benchmark, memcached with libmemcached's memccp/memccat and bash, PostgreSQL with psql,
a Node.js HTTP server with a Node.js client and bash.
slipstream-trace preloads libslipstream-preload.so into every one of them (docs/design.md,
"Hybrid mode"). For each pair the test proves:

- the switch, from the kernel: while a client holds its connection open, its socket is an AF_UNIX
  socket (/proc/net/unix, not /proc/net/tcp) connected (ss) to a socket the server process holds,
  and slipstreamd lists that pair; afterwards every supervisor's --stats counts each connection
  as switched, none relayed or left on TCP;
- hybrid mode: each supervisor's --stats shows calls served in-process by the library;
- the replies, byte for byte: fixed replies literally, and random files of up to 2 MiB through
  both directions compared by SHA-256.
"""

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys

import fixture_runs as fr
import harness
import switch_support as ss

NGINX_CONF = """\
worker_processes 1; daemon off; master_process on; pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/www;
    location = /hello {{ return 200 "hello, slipstream\\n"; }}
    location /echo {{ client_max_body_size 4m; client_body_in_single_buffer on;
                     proxy_pass http://127.0.0.1:{port}/sink; }}
    location = /sink {{ client_max_body_size 4m; return 204; }}
  }}
}}
"""


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None and not os.access(p, os.X_OK)]
    if missing:
        raise __import__("unittest").SkipTest(f"not installed: {', '.join(missing)}")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class RealHybrid(fr.FixtureTest):

    # ---- Processes ------------------------------------------------------------------------------

    def serve(self, name, cmd, port, *, stop=signal.SIGTERM, prefix=(), env=None, cwd=None):
        """`cmd` under slipstream-trace --stats, running once slipstreamd lists its listener on
        `port`. Returns the Started slipstream-trace; self.stop_server(name) ends it."""
        stats = self.path(f"{name}.stats")
        proc = self.start([*prefix, *harness.supervised(cmd, stats=True, extra=["-o", stats])],
                          env=env, cwd=cwd)
        fr.wait_until(lambda: self.listed(port) or proc.proc.poll() is not None, 60,
                      f"{name} listening on {port}, registered with slipstreamd")
        self.assertIsNone(proc.proc.poll(), f"{name} exited: {proc.err.snapshot()}")
        self.servers = getattr(self, "servers", {})
        self.servers[name] = (proc, stats, stop)
        return proc

    def listed(self, port):
        return any(l["address"].endswith(f":{port}")
                   for l in self.status().get("listeners", []))

    def status(self):
        return ss.daemon_status(getattr(self, "status_prefix", ()))

    def stop_server(self, name):
        """Stops the server (its slipstream-trace forwards the signal); returns its --stats."""
        proc, stats, stop = self.servers.pop(name)
        program = fr.program_pid(proc.pid)
        os.kill(program, stop)
        code, _, err = proc.wait(60)
        self.assertIn(code, (0, -stop, 128 + stop), f"{name}: {err}")
        return stats

    def server_processes(self, name):
        """The server program's processes (e.g. nginx's master and worker)."""
        proc = self.servers[name][0]
        return [p for p in ss.descendants(proc.pid) if fr.comm(p) not in fr.SLIPSTREAM_COMMS]

    def client(self, name, cmd, *, stdin=None, timeout=120, prefix=(), env=None):
        """Runs `cmd` under slipstream-trace --stats to its end; returns (stdout bytes, stats)."""
        stats = self.path(f"{name}.stats")
        run = subprocess.run([*prefix, *harness.supervised(cmd, stats=True, extra=["-o", stats])],
                             input=stdin, capture_output=True, timeout=timeout, env=env)
        self.assertEqual(run.returncode, 0, f"{name}: {run.stderr.decode(errors='replace')}")
        return run.stdout, stats

    def held_client(self, name, cmd, *, prefix=(), env=None):
        """`cmd` under slipstream-trace --stats with its stdin a pipe: the program (redis-cli,
        psql, a bash /dev/tcp script) connects and then waits for its input."""
        stats = self.path(f"{name}.stats")
        gated = ss.Gated(self, [*prefix, *harness.supervised(cmd, stats=True,
                                                             extra=["-o", stats])], env=env)
        gated.stats = stats
        return gated

    # ---- Evidence -------------------------------------------------------------------------------

    def assert_switched_to(self, client_trace_pid, server):
        """The client program under `client_trace_pid` holds exactly one socket, an AF_UNIX end
        connected to a socket of the server's processes, listed by slipstreamd; no TCP socket."""
        client = fr.program_pid(client_trace_pid)
        servers = []

        def paired():
            # Looked for each time: a server may fork a process per connection (PostgreSQL).
            servers[:] = self.server_processes(server)
            unix, peers = harness.unix_inodes(), ss.unix_peers()
            theirs = set().union(*(fr.socket_inodes(p) for p in servers))
            mine = fr.socket_inodes(client)
            # In hybrid mode the end arrives at a new fd and the library then moves it over the
            # TCP socket's (dup3): both are in the table for that moment, so wait until it passes.
            if mine & ss.tcp_inodes():
                return []
            return [i for i in mine if i in unix and peers is not None and peers.get(i) in theirs]
        try:
            ends = fr.wait_until(paired, 20, f"{server}'s client {client} connected over AF_UNIX")
        except TimeoutError:
            self.fail(f"{server}'s client {client} has no AF_UNIX end paired with {servers}: "
                      f"its fds {fr.fd_links(client)}, theirs "
                      f"{[fr.fd_links(p) for p in servers]}, unix peers {ss.unix_peers()}")
        self.assertEqual(len(ends), 1, ends)
        self.assertFalse(fr.socket_inodes(client) & ss.tcp_inodes(),
                         "the client holds no TCP socket")
        record = ss.status_connection(ends[0], self.status)
        # The accepting process (slipstreamd's server_pid) may hand the end to a child it forks
        # and close its own copy (PostgreSQL's postmaster): the end must be in the server's tree.
        fr.wait_until(lambda: record["server_unix_inode"] in set().union(
            *(fr.socket_inodes(p) for p in self.server_processes(server))), 10,
            f"the server's end {record} held by {server}")
        self.assertIn(record["server_pid"], self.server_processes(server), record)
        return record

    def assert_all_switched(self, stats, connections=None, at_least=1):
        """--stats: every connection switched (none relayed, none on TCP), and calls served
        in-process by the library (hybrid mode)."""
        counts = ss.read_stats(stats)
        self.assertIsNotNone(counts, f"no --stats summary in {stats}")
        self.assertEqual((counts["relayed"], counts["tcp"]), (0, 0), f"{stats}: {counts}")
        if connections is not None:
            self.assertEqual(counts["switched"], connections, f"{stats}: {counts}")
        self.assertGreaterEqual(counts["switched"], at_least, f"{stats}: {counts}")
        served = ss.preload_counts(stats)
        self.assertGreaterEqual(served.get("socket", 0), 1,
                                f"{stats}: no socket() served in-process, no hybrid mode")
        return counts

    def random_file(self, name, size, seed):
        data = hashlib.shake_256(f"{seed}".encode()).digest(size)
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    # ---- nginx ----------------------------------------------------------------------------------

    def test_nginx_with_curl_and_bash(self):
        need("nginx", "curl", "bash")
        port, root = ss.free_port(), self.path("nginx")
        # As root, nginx's worker runs as nobody (its default user): it must read the files and
        # write its temporary files.
        for d in ("www", "logs", "tmp"):
            os.makedirs(os.path.join(root, d))
        for d in (self.tmp, root, os.path.join(root, "www")):
            os.chmod(d, 0o755)
        os.chmod(os.path.join(root, "tmp"), 0o777)
        with open(os.path.join(root, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=root, port=port))
        _, body = self.random_file("nginx/www/big.bin", 2 << 20, "nginx")
        # A runtime directory of its own, so that nginx starts before its slipstreamd exists:
        # the worker, which runs as nobody, must still find the listener table mapped (below).
        env = None
        if os.geteuid() == 0:
            runtime = self.path("runtime")
            os.mkdir(runtime, 0o700)
            env = dict(os.environ, SLIPSTREAM_RUNTIME_DIR=runtime)
            self.status_prefix = ["env", f"SLIPSTREAM_RUNTIME_DIR={runtime}"]
            self.addCleanup(self.stop_user_daemon)
        self.serve("nginx", ["nginx", "-p", root, "-c", os.path.join(root, "nginx.conf")], port,
                   stop=signal.SIGQUIT, env=env)
        fr.wait_until(lambda: len(self.server_processes("nginx")) >= 2, 20, "nginx's worker")

        # A connection held open by bash (/dev/tcp), proven switched before a byte flows.
        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; read _; '
                  'printf "GET /hello HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n" >&3; cat <&3')
        bash = self.held_client("bash", ["bash", "-c", script], env=env)
        self.assert_switched_to(bash.pid, "nginx")
        code, out, err = bash.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(out[0], "HTTP/1.1 200 OK")  # text mode: "\r\n" reads as "\n"
        self.assertEqual(out[-1], "hello, slipstream")
        self.assert_all_switched(bash.stats, connections=1)

        # curl: keep-alive (three requests on one connection), Connection: close, and 2 MiB
        # down and up (the upload goes through nginx's proxy to itself: its own connect, too).
        url = f"http://127.0.0.1:{port}"
        got, stats = self.client("curl-keepalive", ["curl", "-sS", f"{url}/hello", f"{url}/hello",
                                                    f"{url}/big.bin"], env=env)
        self.assertEqual(got, b"hello, slipstream\n" * 2 + body)
        self.assert_all_switched(stats, connections=1)
        got, stats = self.client("curl-close", ["curl", "-sS", "-H", "Connection: close",
                                                f"{url}/hello", f"{url}/hello"], env=env)
        self.assertEqual(got, b"hello, slipstream\n" * 2)
        self.assert_all_switched(stats, connections=2)
        got, stats = self.client("curl-big", ["curl", "-sS", "-o", "-", f"{url}/big.bin"],
                                 env=env)
        self.assertEqual(sha256(got), sha256(body))
        self.assert_all_switched(stats, connections=1)
        up = self.path("nginx/www/big.bin")
        got, stats = self.client("curl-upload", ["curl", "-sS", "-w", "%{http_code} %{size_upload}",
                                                 "--data-binary", f"@{up}", f"{url}/echo"],
                                 env=env)
        self.assertEqual(got, f"204 {len(body)}".encode())
        self.assert_all_switched(stats, connections=1)

        # The master registered the listener, the worker accepted 6 connections from clients and
        # 1 from itself (the proxy), and connected once: every one switched.
        stats = self.stop_server("nginx")
        counts = self.assert_all_switched(stats)
        self.assertEqual((counts["accepts"], counts["connects"]), (7, 1), counts)
        self.assertEqual(counts["switched"], 8, counts)
        # The worker, which runs as nobody, accepted in-process: its library mapped the listener
        # table, which slipstream-trace provides before the master starts (as nobody it could not
        # open it later in the root-only runtime directory, once the daemon had created it: every
        # accept was then trapped).
        if os.geteuid() == 0:
            with open(stats) as f:
                self.assertEqual(ss.preload_in_process(stats, "accept4"), 7, f.read())

    # ---- Python's http.server ---------------------------------------------------------------

    def test_python_http_server_with_curl(self):
        """CPython's own http.server (a ThreadingHTTPServer) is a dynamically linked program too."""
        need("curl", "bash")
        port, root = ss.free_port(), self.path("www")
        os.mkdir(root)
        _, body = self.random_file("www/big.bin", 2 << 20, "python")
        self.serve("python", [sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1", "--directory", root], port)
        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; read _; '
                  'printf "GET /big.bin HTTP/1.0\r\n\r\n" >&3; cat <&3 | wc -c')
        bash = self.held_client("bash", ["bash", "-c", script])
        self.assert_switched_to(bash.pid, "python")
        code, out, err = bash.finish()
        self.assertEqual(code, 0, err)
        self.assertGreater(int(out[-1]), len(body))  # the headers and the whole body
        self.assert_all_switched(bash.stats, connections=1)
        got, stats = self.client("curl", ["curl", "-sS", f"http://127.0.0.1:{port}/big.bin",
                                          f"http://127.0.0.1:{port}/big.bin"])
        self.assertEqual(sha256(got), sha256(body + body))
        self.assert_all_switched(stats)
        server = self.assert_all_switched(self.stop_server("python"))
        self.assertEqual(server["accepts"], server["switched"], server)

    # ---- Node.js --------------------------------------------------------------------------------

    def test_node_http_server_with_node_client_and_bash(self):
        """Node.js (libuv: non-blocking connect and accept4, epoll) as server and client."""
        need("node", "bash")
        port = ss.free_port()
        peer = os.path.join(harness.SOURCE, "tests", "programs", "js", "http_peer.js")
        self.serve("node", ["node", peer, "server", str(port)], port)

        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; read _; printf "POST / HTTP/1.0\r\n'
                  'Content-Length: 17\r\n\r\nhello, slipstream" >&3; cat <&3')
        bash = self.held_client("bash", ["bash", "-c", script])
        self.assert_switched_to(bash.pid, "node")
        code, out, err = bash.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(out[0], "HTTP/1.1 200 OK")
        self.assertEqual(out[-1], "hello, slipstream")
        self.assert_all_switched(bash.stats, connections=1)

        # 40 requests of 0 B to 1 MiB, 4 at a time: a connection each with "Connection: close",
        # four kept alive otherwise. The client checks every body and that the addresses the
        # server's sockets report are its own sockets' (http_peer.js).
        got, stats = self.client("node-close", ["node", peer, "client", str(port), "40", "close"])
        self.assertEqual(json.loads(got), {"ok": 40, "bad": 0, "sockets": 40})
        self.assert_all_switched(stats, connections=40)
        got, stats = self.client("node-keepalive", ["node", peer, "client", str(port), "40",
                                                    "keepalive"])
        self.assertEqual(json.loads(got), {"ok": 40, "bad": 0, "sockets": 4})
        self.assert_all_switched(stats, connections=4)
        # Node sets TCP_NODELAY on each connection: answered in-process on the switched sockets.
        self.assertGreaterEqual(ss.preload_in_process(stats, "setsockopt"), 4)

        stats = self.stop_server("node")
        server = self.assert_all_switched(stats, connections=45)
        self.assertEqual(server["accepts"], 45, server)
        self.assertEqual(ss.preload_in_process(stats, "accept4"), 45)

    # ---- redis ----------------------------------------------------------------------------------

    def test_redis_with_redis_cli_and_benchmark(self):
        need("redis-server", "redis-cli", "redis-benchmark")
        port = ss.free_port()
        self.serve("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--daemonize", "no",
                             "--dir", self.tmp], port)

        # redis-cli connects, then reads its commands from stdin: the switch is checked first.
        cli = self.held_client("redis-cli", ["redis-cli", "-p", str(port)])
        self.assert_switched_to(cli.pid, "redis")
        cli.proc.stdin.write("SET greeting hello\nAPPEND greeting \", slipstream\"\n"
                             "GET greeting\nINCRBY n 41\nINCR n\nDEL greeting\nGET greeting\n")
        code, out, err = cli.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(out, ["OK", "17", "hello, slipstream", "41", "42", "1", ""])
        self.assert_all_switched(cli.stats, connections=1)

        # 1 MiB of binary data in (-x: the last argument from stdin) and out (--raw).
        path, data = self.random_file("redis.bin", 1 << 20, "redis")
        with open(path, "rb") as f:
            got, stats = self.client("redis-set", ["redis-cli", "-p", str(port), "-x", "SET",
                                                   "blob"], stdin=f.read())
        self.assertEqual(got, b"OK\n")
        self.assert_all_switched(stats, connections=1)
        got, stats = self.client("redis-get", ["redis-cli", "-p", str(port), "--raw", "GET",
                                               "blob"])
        self.assertEqual(sha256(got), sha256(data + b"\n"))
        self.assert_all_switched(stats, connections=1)

        # redis-benchmark: 10 connections, every reply checked by it (errors would be printed).
        got, stats = self.client("redis-benchmark", [
            "redis-benchmark", "-p", str(port), "-c", "10", "-n", "2000", "-t", "set,get,lpush",
            "-d", "64", "--csv"])
        rows = [line.split(",")[0].strip('"') for line in got.decode().splitlines()[1:]]
        self.assertEqual(rows, ["SET", "GET", "LPUSH"], got)
        counts = self.assert_all_switched(stats)
        # redis-benchmark opens its 10 clients per test (and one for its CONFIG probe).
        self.assertGreaterEqual(counts["switched"], 30, counts)

        server = self.assert_all_switched(self.stop_server("redis"))
        self.assertEqual(server["accepts"], server["switched"], server)

    # ---- memcached ------------------------------------------------------------------------------

    def test_memcached_with_libmemcached_tools_and_bash(self):
        need("memcached", "memccp", "memccat", "bash")
        port = ss.free_port()
        user = ["-u", "root"] if os.getuid() == 0 else []
        self.serve("memcached", ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                 "-t", "2", "-m", "64", *user], port)

        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; read _; '
                  'printf "set k 5 0 17\\r\\nhello, slipstream\\r\\nget k\\r\\nquit\\r\\n" >&3; '
                  'cat <&3')
        bash = self.held_client("bash", ["bash", "-c", script])
        self.assert_switched_to(bash.pid, "memcached")
        code, out, err = bash.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(out, ["STORED", "VALUE k 5 17", "hello, slipstream", "END"])
        self.assert_all_switched(bash.stats, connections=1)

        # 512 KiB of binary data stored with memccp (the file's name is the key) and read back.
        path, data = self.random_file("blob.bin", 512 << 10, "memcached")
        servers = f"--servers=127.0.0.1:{port}"
        _, stats = self.client("memccp", ["memccp", servers, path])
        self.assert_all_switched(stats, connections=1)
        got, stats = self.client("memccat", ["memccat", servers, "blob.bin"])
        self.assertEqual(sha256(got), sha256(data + b"\n"))  # memccat ends each value with one
        self.assert_all_switched(stats, connections=1)

        server = self.assert_all_switched(self.stop_server("memcached"), connections=3)
        self.assertEqual(server["accepts"], 3, server)

    # ---- PostgreSQL -----------------------------------------------------------------------------

    def test_postgres_with_psql(self):
        pg_bin = "/usr/lib/postgresql/15/bin"
        need(f"{pg_bin}/postgres", f"{pg_bin}/initdb", "psql")
        prefix, env = [], dict(os.environ)
        if os.getuid() == 0:
            # PostgreSQL refuses to run as root: server and client (and their slipstream-traces)
            # run as the postgres user, with a runtime directory, and so a daemon, of its own.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                self.skipTest("running as root and there is no postgres user")
            runtime = self.path("runtime")
            os.mkdir(runtime, 0o700)
            for d in (self.tmp, runtime):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                      "--init-groups", "--"]
            env.update(SLIPSTREAM_RUNTIME_DIR=runtime, HOME=self.tmp)
            self.status_prefix = ["env", f"SLIPSTREAM_RUNTIME_DIR={runtime}", *prefix]
            self.addCleanup(self.stop_user_daemon)
        data, sock = self.path("pgdata"), self.path("pgsock")
        init = harness.run([*prefix, f"{pg_bin}/initdb", "-D", data, "-A", "trust", "-U", "ss",
                            "-E", "UTF8", "--no-instructions"], env=env, timeout=120)
        self.assertEqual(init.returncode, 0, init.stderr)
        os.mkdir(sock)
        if prefix:
            os.chown(sock, pw.pw_uid, pw.pw_gid)
        port = ss.free_port()
        self.serve("postgres", [f"{pg_bin}/postgres", "-D", data, "-p", str(port), "-k", sock,
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"], port,
                   stop=signal.SIGINT, prefix=prefix, env=env, cwd=self.tmp)
        psql = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "ss", "-d", "postgres",
                "-At", "-v", "ON_ERROR_STOP=1"]
        fr.wait_until(lambda: harness.run([*prefix, *psql, "-c", "select 1"], env=env,
                                          timeout=30).returncode == 0, 60, "postgres ready")

        held = self.held_client("psql", psql, prefix=prefix, env=env)
        self.assert_switched_to(held.pid, "postgres")
        held.proc.stdin.write("create table t (k int primary key, v text);\n"
                              "insert into t select g, md5(g::text) from "
                              "generate_series(1, 1000) g;\n"
                              "select count(*), md5(string_agg(v, ',' order by k)) from t;\n")
        code, out, err = held.finish()
        self.assertEqual(code, 0, err)
        want = hashlib.md5(",".join(hashlib.md5(str(g).encode()).hexdigest()
                                    for g in range(1, 1001)).encode()).hexdigest()
        self.assertEqual(out, ["CREATE TABLE", "INSERT 0 1000", f"1000|{want}"])
        self.assert_all_switched(held.stats, connections=1)

        got, stats = self.client("psql-select", [*psql, "-c", "select repeat('x', 100000)"],
                                 prefix=prefix, env=env)
        self.assertEqual(got, b"x" * 100000 + b"\n")
        self.assert_all_switched(stats, connections=1)

        # The postmaster forks a backend per connection; the probe connections of the readiness
        # wait above are unsupervised, so they stay on TCP: only the two supervised clients'
        # connections (and none relayed) are switched.
        counts = ss.read_stats(self.stop_server("postgres"))
        self.assertEqual(counts["relayed"], 0, counts)
        self.assertEqual(counts["switched"], 2, counts)

    def stop_user_daemon(self):
        try:
            pid = self.status().get("pid")
            if pid:
                os.kill(pid, signal.SIGTERM)
        except Exception:  # no daemon
            pass


if __name__ == "__main__":
    fr.main()

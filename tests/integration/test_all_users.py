#!/usr/bin/env python3
"""A system-wide slipstreamd (--all-users, run as root) pairs the connections of every user.

slipstream-trace, slipstreamd and the C fixture are copied into a fresh 0755 directory (the build
tree may not be readable by nobody). The test starts root's `slipstreamd --all-users` in a fresh
directory, which the daemon makes 0755 with a 0666 socket and a 0644 listeners.table. Each
program runs under slipstream-trace with SLIPSTREAM_RUNTIME_DIR naming that directory: a root
directory closed to writers is a system-wide daemon's, which slipstream-trace uses without ever
starting a daemon or creating a file there.

- A server as root and a client as nobody, then both as nobody: the connection is switched (both
  fds' inodes in /proc/net/unix, not in /proc/net/tcp, one socketpair, the daemon lists the pair)
  and 1 MiB is echoed byte for byte. A user other than root sees only its own pids in the status.
- Without --all-users (the directory and socket opened up afterwards, as an administrator might),
  the daemon refuses nobody's session: nobody's client stays on TCP, exits as a native run does,
  and its slipstream-trace names the cause and the fix (--all-users) on stderr.
"""

import os
import signal
import socket
import stat
import subprocess
import unittest

import fixture_runs as fr
import harness
import switch_support as ss
import user_runs as ur

USER = "nobody"
N = 1 << 20
COMMON = ["--mode", "echo", "--bytes", str(N), "--hold"]
CLIENT_LINE = f"client: mode=echo connections=1 bytes_out={N} bytes_in={N} errors=0"
SERVER_LINE = f"server: mode=echo connections=1 bytes_in={N} bytes_out={N} errors=0"


class AllUsers(ss.EvidenceMixin, ur.UserRunsMixin, fr.FixtureTest):
    USER = USER

    def setUp(self):
        super().setUp()
        # Where the copied slipstream-trace looks for the hybrid-mode library (its test skips
        # without it).
        self.library = ur.LIBRARY
        self.setup_user({"slipstream-trace": harness.TRACE_BIN, "slipstreamd": ss.DAEMON_BIN,
                         "switch_peer": harness.program("switch_peer"),
                         "switch_peer_dyn": harness.program("switch_peer_dyn")},
                        library=os.path.exists(self.library), work_mode=0o755)  # port files
        self.runtime = os.path.join(self.tmp, "runtime")  # made by the daemon
        self.daemon_bin = os.path.join(self.bin, "slipstreamd")

    def env(self):
        return ["env", f"SLIPSTREAM_RUNTIME_DIR={self.runtime}"]

    def as_root(self, cmd):
        return [*self.env(), *cmd]

    def start_daemon(self, *args):
        daemon = subprocess.Popen(self.as_root([self.daemon_bin, "--foreground",
                                                "--idle-exit", "300", *args]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self.stop, daemon)
        socket_path = os.path.join(self.runtime, "matcher.sock")

        def listening():
            # Not the file's existence: bind() creates it before the daemon sets its mode and
            # listens, and a test's chmod in between was undone (connect: EACCES as nobody).
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                try:
                    probe.connect(socket_path)
                    return True
                except OSError:
                    return False
        fr.wait_until(lambda: listening() or daemon.poll() is not None, 10,
                      "slipstreamd listening")
        self.assertIsNone(daemon.poll(), daemon.stderr.read() if daemon.poll() is not None else "")
        return daemon

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()

    def status(self, prefix=None):
        return ss.daemon_status(prefix=prefix or self.env(), daemon=self.daemon_bin)

    def peer(self, role, port_file, as_nobody, dynamic=False):
        """slipstream-trace -- switch_peer ROLE, as nobody or as root; a client waits at a gate
        until the daemon lists its supervisor (see ss.Gated.start_program). `dynamic`: the
        dynamically linked build, run in hybrid mode."""
        trace = os.path.join(self.bin, "slipstream-trace")
        program = "switch_peer_dyn" if dynamic else "switch_peer"
        cmd = [os.path.join(self.bin, program), role, "--port-file", port_file, *COMMON]
        if role == "client":
            cmd = ss.after_gate(cmd)
        cmd = [trace, "--", *cmd]
        return ss.Gated(self, self.as_user(cmd) if as_nobody else self.as_root(cmd))

    def start_pair(self, server_as_nobody, dynamic_server=False):
        port_file = os.path.join(self.work, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server = self.peer("server", port_file, server_as_nobody, dynamic_server)
        fr.read_port(port_file)
        client = self.peer("client", port_file, True)
        client_supervisor = fr.wait_until(lambda: ur.supervisor_below(client.pid), 10,
                                          "the client's slipstream-trace")
        return server, client, client_supervisor

    def finish(self, server, client):
        client.go()
        server.go()
        client_result, server_result = client.finish(), server.finish()
        self.assertEqual((client_result[0], ss.program_lines(client_result[1])),
                         (0, [CLIENT_LINE]), client_result[2])
        self.assertEqual((server_result[0], ss.program_lines(server_result[1])),
                         (0, [SERVER_LINE]), server_result[2])
        return client_result, server_result

    def assert_system_wide_files(self):
        def mode(name):
            st = os.lstat(os.path.join(self.runtime, name))
            return st.st_uid, stat.S_IMODE(st.st_mode)
        self.assertEqual(mode("."), (0, 0o755))
        self.assertEqual(mode("matcher.sock"), (0, 0o666))
        self.assertEqual(mode("listeners.table"), (0, 0o644))
        # slipstream-trace created nothing there (preload counters, a table of its own).
        self.assertEqual(sorted(os.listdir(self.runtime)),
                         ["listeners.table", "matcher.lock", "matcher.sock"])

    def switched_pair(self, server_as_nobody, dynamic_server=False):
        self.start_daemon("--all-users")
        server, client, client_supervisor = self.start_pair(server_as_nobody, dynamic_server)
        client.start_program(status=self.status, supervisor=client_supervisor)
        c, s = client.ready(), server.ready()
        self.assertEqual(self.uid(c["pid"]), self.user.pw_uid)
        self.assertEqual(self.uid(s["pid"]), self.user.pw_uid if server_as_nobody else 0)
        if dynamic_server:
            with open(f"/proc/{s['pid']}/maps") as f:
                self.assertIn("libslipstream-preload.so", f.read(), "no hybrid mode")
        self.assert_switched(c, s, status=self.status)
        status = self.status()
        uids = {u["uid"] for u in status["supervisors"]}
        self.assertEqual(uids, {self.user.pw_uid} if server_as_nobody else {0, self.user.pw_uid})
        self.finish(server, client)
        self.assert_system_wide_files()
        return c, s

    @staticmethod
    def uid(pid):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])  # effective
        return None

    def test_root_server_nobody_client_switched(self):
        self.switched_pair(server_as_nobody=False)

    def test_hybrid_root_server_nobody_client_switched(self):
        # Root's supervisor runs the server in hybrid mode (it accepts in-process); nobody's
        # cannot write the table's accept gates, so the daemon raises `switching` for its
        # connect (IntentBody::raise_gate): the server's accept must offer the connection to its
        # supervisor, or it would be relayed instead of switched.
        if not os.path.exists(self.library):
            raise unittest.SkipTest("libslipstream-preload.so not built")
        self.switched_pair(server_as_nobody=False, dynamic_server=True)

    def test_nobody_server_nobody_client_switched(self):
        self.switched_pair(server_as_nobody=True)

    def test_status_hides_other_users_pids(self):
        self.start_daemon("--all-users")
        server, client, client_supervisor = self.start_pair(server_as_nobody=False)
        client.start_program(status=self.status, supervisor=client_supervisor)
        c, s = client.ready(), server.ready()
        record = ss.status_connection(harness.fd_socket_inode(c["pid"], c["fd"]), self.status)
        self.assertTrue(ss.same_process(record["client_pid"], c["pid"]), record)
        self.assertTrue(ss.same_process(record["server_pid"], s["pid"]), record)
        # nobody asks: its own client's pid, not root's server's.
        seen = self.status(prefix=self.as_user([]))
        [mine] = [r for r in seen["connections"]
                  if r["client_unix_inode"] == record["client_unix_inode"]]
        self.assertTrue(ss.same_process(mine["client_pid"], c["pid"]), mine)
        self.assertEqual(mine["server_pid"], 0, mine)
        self.assertEqual({u["pid"] for u in seen["supervisors"] if u["uid"] == 0}, {0}, seen)
        self.finish(server, client)

    def test_no_system_wide_daemon_nobody_stays_tcp_and_is_told_why(self):
        # Root's 0755 directory and no daemon: slipstream-trace starts none there and creates
        # nothing; it names the cause and the fix, and the program runs on TCP.
        os.mkdir(self.runtime, 0o755)
        os.chmod(self.runtime, 0o755)
        port_file = os.path.join(self.work, "port")
        server = ss.Gated(self, [os.path.join(self.bin, "switch_peer"), "server",
                                 "--port-file", port_file, *COMMON])
        fr.read_port(port_file)
        client = self.peer("client", port_file, True)
        warning = client.err.wait_for(r"no slipstreamd", 20)
        self.assertIn(f"no slipstreamd answers in {self.runtime}", warning)
        self.assertIn("slipstreamd --all-users", warning)
        client.go()
        c, s = client.ready(), server.ready()
        self.assert_on_tcp(c, status=self.status)
        client_result, _ = self.finish(server, client)
        # One line says it all (no second, generic warning).
        self.assertEqual(len([l for l in client_result[2] if "slipstreamd" in l]), 1,
                         client_result[2])
        self.assertEqual(os.listdir(self.runtime), [])

    def test_without_all_users_nobody_stays_tcp_and_is_told_why(self):
        os.mkdir(self.runtime, 0o700)
        daemon = self.start_daemon()
        # Opened up afterwards (as an administrator might, or a socket unit with SocketMode=0666):
        # the daemon still serves root alone.
        os.chmod(self.runtime, 0o755)
        os.chmod(os.path.join(self.runtime, "matcher.sock"), 0o666)
        server, client, client_supervisor = self.start_pair(server_as_nobody=False)
        warning = client.err.wait_for(r"--all-users", 20)
        self.assertIn(f"slipstreamd in {self.runtime} runs as uid 0 and serves only its own "
                      f"user: start it with --all-users to serve uid {self.user.pw_uid}", warning)
        client.go()
        c, s = client.ready(), server.ready()
        self.assert_on_tcp(c, status=self.status)
        self.assert_on_tcp(s, status=self.status)
        client_result, _ = self.finish(server, client)
        # Named once, and no "lost slipstreamd" for a refusal.
        err = "\n".join(client_result[2])
        self.assertEqual(err.count("--all-users"), 1, err)
        self.assertNotIn("lost slipstreamd", err)
        self.assertIsNone(daemon.poll())


if __name__ == "__main__":
    fr.main()

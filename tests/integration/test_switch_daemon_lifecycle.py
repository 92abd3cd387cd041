#!/usr/bin/env python3
"""slipstreamd's life: started on demand, run by hand, idle exit, one per directory, one per user.

Each test uses a runtime directory of its own (SLIPSTREAM_RUNTIME_DIR), so it sees exactly the
daemons it causes: the first slipstream-trace starts a detached daemon in a 0700 directory with a
0600 socket and later ones use it; `slipstreamd --foreground` run by hand pairs connections and
leaves on SIGTERM, removing its socket; `--idle-exit 1` leaves a second after the last supervisor
(and not while one is connected); a second daemon for the same directory exits 0 at once and the
first keeps serving. Different users never pair: a supervised client as nobody (nobody's own
daemon) connecting to a supervised server as root stays TCP, and root's daemon closes a
connection from nobody's uid even when the socket is reachable.
"""

import errno
import os
import pwd
import shutil
import signal
import stat
import sys
import tempfile
import time
import unittest

import fixture_runs as fr
import harness
import switch_support as ss

USER = "nobody"
COMM = "slipstreamd"


def daemons_serving(directory):
    """Pids of slipstreamd processes started for `directory` (from their environment)."""
    want = f"SLIPSTREAM_RUNTIME_DIR={directory}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and fr.comm(int(entry)) == COMM:
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


class DaemonLifecycle(ss.EvidenceMixin, fr.FixtureTest):

    def runtime_dir(self, create=True):
        """A fresh runtime directory whose daemons die with the test."""
        parent = tempfile.mkdtemp(prefix="slipstream-life-")
        directory = os.path.join(parent, "rt")
        if create:
            os.mkdir(directory, 0o700)
        self.addCleanup(shutil.rmtree, parent, True)
        self.addCleanup(self.kill_daemons, directory)
        return directory

    def kill_daemons(self, directory):
        for pid in daemons_serving(directory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def env(self, directory):
        return dict(os.environ, SLIPSTREAM_RUNTIME_DIR=directory)

    def status_of(self, directory):
        return lambda: ss.daemon_status(prefix=["env", f"SLIPSTREAM_RUNTIME_DIR={directory}"])

    def switched_pair(self, directory):
        """A supervised server and client using `directory`: proves a switch, then finishes."""
        env, status = self.env(directory), self.status_of(directory)
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, "--hold")), env=env)
        fr.read_port(port_file)
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ss.c_peer("client", "--port-file", port_file, "--hold"))), env=env)
        client.start_program(status=status)
        c, s = client.ready(), server.ready()
        record = self.assert_switched(c, s, status=status)
        client.go()
        server.go()
        self.assertEqual(client.finish()[0], 0)
        self.assertEqual(server.finish()[0], 0)
        return record

    def test_started_on_demand_and_shared(self):
        directory = self.runtime_dir(create=False)
        status = self.status_of(directory)
        self.assertEqual(status(), {"schema": 1, "running": False})
        result = harness.run(harness.supervised([harness.program("lifecycle"), "exit", "0"]),
                             env=self.env(directory))
        self.assertEqual((result.returncode, result.stdout), (0, "exiting 0\n"), result.stderr)
        first = status()
        pid = first["pid"]
        self.assertEqual(fr.comm(pid), COMM)
        self.assertEqual(daemons_serving(directory), [pid])
        self.assertNotEqual(os.getsid(pid), os.getsid(0), "detached into its own session")
        st = os.stat(directory)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (os.geteuid(), 0o700))
        st = os.stat(first["socket"])
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode) & 0o077, 0)
        # Later supervisors use the same daemon: no second one.
        record = self.switched_pair(directory)
        self.assertTrue(record)
        self.assertEqual(status()["pid"], pid)
        self.assertEqual(daemons_serving(directory), [pid])

    def test_foreground_by_hand(self):
        directory = self.runtime_dir()
        daemon = ss.Gated(self, [ss.DAEMON_BIN, "--foreground", "-v"], env=self.env(directory))
        status = self.status_of(directory)
        fr.wait_until(lambda: status().get("pid") == daemon.pid, 10, "the daemon answering")
        self.switched_pair(directory)
        self.assertEqual(daemons_serving(directory), [daemon.pid], "nobody started another")
        daemon.proc.send_signal(signal.SIGTERM)
        code, _, err = daemon.finish(10)
        self.assertEqual(code, 0, err)
        self.assertTrue(any("listening on" in line for line in err), err)
        self.assertTrue(any("paired" in line for line in err), "-v logs the pairing")
        self.assertFalse(os.path.exists(os.path.join(directory, "matcher.sock")),
                         "a clean stop removes the socket")
        self.assertEqual(status(), {"schema": 1, "running": False})

    def test_idle_exit(self):
        directory = self.runtime_dir()
        daemon = ss.Gated(self, [ss.DAEMON_BIN, "--foreground", "--idle-exit", "1"],
                          env=self.env(directory))
        status = self.status_of(directory)
        fr.wait_until(lambda: status().get("pid") == daemon.pid, 10, "the daemon answering")
        # A supervisor connected keeps it.
        port_file = self.path("port")
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file)), env=self.env(directory))
        fr.read_port(port_file)
        fr.wait_until(lambda: server.pid in ss.supervisor_pids(status), 10, "the supervisor")
        time.sleep(2.5)  # an observation window longer than the idle limit, not a sync
        self.assertIsNone(daemon.proc.poll(), "the daemon must stay while a supervisor is there")
        server.kill()
        started = time.monotonic()
        code, _, err = daemon.finish(15)
        self.assertEqual(code, 0, err)
        self.assertLess(time.monotonic() - started, 5, "left soon after the last supervisor")
        self.assertFalse(os.path.exists(os.path.join(directory, "matcher.sock")))

    def test_second_daemon_exits_quietly(self):
        directory = self.runtime_dir()
        first = ss.Gated(self, [ss.DAEMON_BIN, "--foreground"], env=self.env(directory))
        status = self.status_of(directory)
        fr.wait_until(lambda: status().get("pid") == first.pid, 10, "the first daemon answering")
        second = harness.run([ss.DAEMON_BIN, "--foreground"], env=self.env(directory),
                             timeout=10)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertNotIn("error", second.stderr)
        detached = harness.run([ss.DAEMON_BIN], env=self.env(directory), timeout=10)
        self.assertEqual(detached.returncode, 0, detached.stderr)
        self.assertEqual(status()["pid"], first.pid)
        fr.wait_until(lambda: daemons_serving(directory) == [first.pid], 10,
                      "only the first daemon left")
        self.switched_pair(directory)  # the first one still pairs

    def nobody_setup(self):
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            raise unittest.SkipTest("needs root and runuser")
        try:
            user = pwd.getpwnam(USER)
        except KeyError:
            raise unittest.SkipTest(f"no user {USER}")
        os.chmod(self.tmp, 0o755)
        binaries = os.path.join(self.tmp, "bin")
        os.mkdir(binaries, 0o755)
        for name, src in {"slipstream-trace": harness.TRACE_BIN, "slipstreamd": ss.DAEMON_BIN,
                          "switch_peer": harness.program("switch_peer")}.items():
            shutil.copy(src, os.path.join(binaries, name))
            os.chmod(os.path.join(binaries, name), 0o755)
        work = os.path.join(self.tmp, "work")
        os.mkdir(work, 0o755)
        os.chown(work, user.pw_uid, user.pw_gid)
        runtime = os.path.join(work, "runtime")
        self.addCleanup(self.kill_daemons, runtime)
        return user, binaries, work, runtime

    def test_different_users_never_pair(self):
        user, binaries, work, runtime = self.nobody_setup()
        nobody = ["runuser", "-u", USER, "--", "env", f"SLIPSTREAM_RUNTIME_DIR={runtime}"]
        port_file = os.path.join(work, "port")
        common = ["--mode", "echo", "--bytes", str(1 << 20), "--hold"]
        server = ss.Gated(self, harness.supervised(
            [os.path.join(binaries, "switch_peer"), "server", "--port-file", port_file, *common]))
        port = fr.read_port(port_file)
        client = ss.Gated(self, nobody + [
            os.path.join(binaries, "slipstream-trace"), "--stats", "--",
            os.path.join(binaries, "switch_peer"), "client", "--port-file", port_file, *common])
        c, s = client.ready(), server.ready()
        nobody_status = lambda: ss.daemon_status(prefix=nobody,
                                                 daemon=os.path.join(binaries, "slipstreamd"))
        # Both ends are supervised, each by its user's daemon...
        self.assertIn(f"127.0.0.1:{port}",
                      [l["address"] for l in ss.daemon_status()["listeners"]])
        self.assertTrue(nobody_status()["supervisors"], "the client's supervisor is nobody's")
        self.assertEqual(nobody_status()["listeners"], [], "nobody's daemon knows no listener")
        # ... and the connection stays TCP.
        self.assert_on_tcp(c, status=nobody_status)
        self.assert_on_tcp(s)
        client.go()
        server.go()
        code, out, err = client.finish()
        self.assertEqual(code, 0, err)
        self.assertEqual(ss.program_lines(out)[0],
                         f"client: mode=echo connections=1 bytes_out={1 << 20} "
                         f"bytes_in={1 << 20} errors=0")
        self.assertIn("switched 0, relayed 0, left on TCP 1", " ".join(err))
        self.assertEqual(server.finish()[0], 0)

    def test_daemon_refuses_another_uid(self):
        """Even with its socket reachable, a daemon closes a connection from another uid, after
        saying why (an unsolicited kError EACCES naming the fix, for the supervisor to report)."""
        user, binaries, work, _ = self.nobody_setup()
        directory = self.runtime_dir()
        daemon = ss.Gated(self, [ss.DAEMON_BIN, "--foreground"], env=self.env(directory))
        status = self.status_of(directory)
        fr.wait_until(lambda: status().get("pid") == daemon.pid, 10, "the daemon answering")
        socket_path = status()["socket"]
        os.chmod(os.path.dirname(directory), 0o755)
        os.chmod(directory, 0o711)
        os.chmod(socket_path, 0o666)
        probe = ("import socket, struct, sys\n"
                 "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
                 "s.settimeout(10)\n"
                 "s.connect(sys.argv[1])\n"
                 "m = s.recv(4096)\n"
                 "kind = struct.unpack_from('<H', m, 6)[0]\n"
                 "seq = struct.unpack_from('<Q', m, 8)[0]\n"
                 "err = struct.unpack_from('<i', m, 24)[0]\n"
                 "text = m[28:].split(b'\\0')[0].decode()\n"
                 "print(kind, seq, err, text)\n"
                 "print('closed' if s.recv(4096) == b'' else 'answered')\n")
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        result = harness.run(["runuser", "-u", USER, "--", python, "-c", probe,
                              socket_path], timeout=30)
        os.chmod(directory, 0o700)  # private again, as the status command insists
        # kError (104), unsolicited (seq 0), EACCES.
        self.assertEqual((result.returncode, result.stdout),
                         (0, f"104 0 {errno.EACCES} serves only uid {os.geteuid()}: start it with "
                          "--all-users\nclosed\n"), result.stderr)
        daemon.err.wait_for(rf"refused a connection from uid {user.pw_uid}", 10)
        self.assertIsNone(daemon.proc.poll(), "the daemon goes on")
        self.assertEqual(status()["pid"], daemon.pid)


if __name__ == "__main__":
    fr.main()

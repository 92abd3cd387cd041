#!/usr/bin/env python3
"""`cmake --install build --prefix DIR` gives a working installation.

The installed slipstream-trace finds the installed slipstreamd and libslipstream-preload.so by
its own location (no PATH, no SLIPSTREAMD) and switches the demo's pingpong connection; the
systemd units pass `systemd-analyze verify`; slipstreamd takes its listening socket from a
socket-activation launcher (LISTEN_PID/LISTEN_FDS) and pairs a switch through it; the bash
completion completes the options --help lists. Tests, benchmarks and examples are not installed.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

import fixture_runs as fr
import harness

PINGPONG = os.path.join(harness.BUILD, "examples", "pingpong")
EXPECTED = {
    "bin/slipstream-trace", "bin/slipstreamd", "lib/slipstream/libslipstream-preload.so",
    "share/man/man1/slipstream-trace.1.gz", "share/man/man8/slipstreamd.8.gz",
    "share/bash-completion/completions/slipstream-trace",
    "share/bash-completion/completions/slipstreamd",
    "lib/systemd/user/slipstreamd.socket", "lib/systemd/user/slipstreamd.service",
    "lib/systemd/system/slipstreamd.socket", "lib/systemd/system/slipstreamd.service",
    "share/doc/slipstream/copyright", "share/doc/slipstream/changelog.gz",
    "share/doc/slipstream/stats-schema.md",
}
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def installed_files(prefix):
    found = set()
    for root, _, files in os.walk(prefix):
        for name in files:
            found.add(os.path.relpath(os.path.join(root, name), prefix))
    return found


def pingpong_switch(test, trace, runtime_dir, env=None):
    """The demo's switch: a supervised pingpong server and client; returns the client's
    output, which reports what the kernel says the client's fd is."""
    env = dict(env or os.environ, SLIPSTREAM_RUNTIME_DIR=runtime_dir)
    port_file = os.path.join(runtime_dir, "..", f"port-{os.getpid()}")
    server = subprocess.Popen([trace, "--", PINGPONG, "server", port_file], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    test.addCleanup(harness.kill_with_descendants, server.pid)
    try:
        port = fr.read_port(port_file)
        client = subprocess.run([trace, "--stats=json", "--", PINGPONG, "client", str(port),
                                 "200", "1"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        harness.kill_with_descendants(server.pid)  # its shepherd and program too
        server.wait(10)
        os.unlink(port_file)
    test.assertEqual(client.returncode, 0, client.stderr)
    test.assertIn("is an AF_UNIX socket (listed in /proc/net/unix)", client.stdout)
    stats = json.loads(client.stderr.splitlines()[-1])
    test.assertEqual(stats["connections"]["switched"], 1, stats)
    return client


def daemon_exe(daemon, runtime_dir):
    status = json.loads(subprocess.run(
        [daemon, "--status", "--json"], capture_output=True, text=True, timeout=10,
        env=dict(os.environ, SLIPSTREAM_RUNTIME_DIR=runtime_dir)).stdout)
    return status, os.readlink(f"/proc/{status['pid']}/exe")


class Install(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="slipstream-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        subprocess.run(["cmake", "--install", harness.BUILD, "--prefix", cls.prefix],
                       check=True, capture_output=True, timeout=120)
        cls.trace = os.path.join(cls.prefix, "bin", "slipstream-trace")
        cls.daemon = os.path.join(cls.prefix, "bin", "slipstreamd")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def runtime_dir(self):
        d = tempfile.mkdtemp(prefix="run-", dir=self.tmp)
        self.addCleanup(self.stop_daemon, d)
        return d

    def stop_daemon(self, runtime_dir):
        try:
            status, _ = daemon_exe(self.daemon, runtime_dir)
            os.kill(status["pid"], 15)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError):
            pass

    def test_layout(self):
        self.assertEqual(installed_files(self.prefix), EXPECTED)

    def test_installed_binaries_find_each_other(self):
        env = dict(os.environ, PATH=SYSTEM_PATH)
        env.pop("SLIPSTREAMD", None)
        if shutil.which("slipstreamd", path=SYSTEM_PATH):
            raise unittest.SkipTest("a slipstreamd is installed in PATH: cannot tell them apart")
        runtime = self.runtime_dir()
        pingpong_switch(self, self.trace, runtime, env)
        _, exe = daemon_exe(self.daemon, runtime)
        self.assertEqual(exe, self.daemon, "slipstream-trace must start the slipstreamd beside it")
        maps = subprocess.run([self.trace, "--", "cat", "/proc/self/maps"], env=env,
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(maps.returncode, 0, maps.stderr)
        self.assertIn(os.path.join(self.prefix, "lib/slipstream/libslipstream-preload.so"),
                      maps.stdout, "the preload library is found in ../lib/slipstream")

    def test_systemd_units_verify(self):
        if shutil.which("systemd-analyze") is None:
            raise unittest.SkipTest("systemd-analyze not installed (scripts/setup installs it)")
        for scope in ("system", "user"):
            units = [os.path.join(self.prefix, "lib/systemd", scope, f"slipstreamd.{kind}")
                     for kind in ("socket", "service")]
            with open(units[1]) as f:
                self.assertIn(f"ExecStart={self.daemon} --foreground\n", f.read())
            # --man=no: the Documentation= page is installed under the prefix, not in MANPATH
            # (the package test verifies with the man page installed).
            cmd = ["systemd-analyze", "verify", "--man=no", *units]
            env = dict(os.environ)
            if scope == "user":
                cmd.insert(1, "--user")
                env.setdefault("XDG_RUNTIME_DIR", self.tmp)
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
            self.assertEqual((out.returncode, out.stderr), (0, ""), f"{scope} units")
        # The check can fail: a unit whose binary does not exist is refused (both units in one
        # directory: verify loads a unit named by another from that one's directory).
        broken_dir = os.path.join(self.tmp, "broken")
        os.makedirs(broken_dir, exist_ok=True)
        system = os.path.join(self.prefix, "lib/systemd/system")
        shutil.copy(os.path.join(system, "slipstreamd.socket"), broken_dir)
        with open(os.path.join(system, "slipstreamd.service")) as f, \
                open(os.path.join(broken_dir, "slipstreamd.service"), "w") as g:
            g.write(f.read().replace(self.daemon, os.path.join(self.tmp, "missing")))
        out = subprocess.run(["systemd-analyze", "verify", "--man=no",
                              os.path.join(broken_dir, "slipstreamd.socket"),
                              os.path.join(broken_dir, "slipstreamd.service")],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(out.returncode, 0, out.stderr)
        self.assertIn("is not executable", out.stderr)

    def activated(self, runtime, sock_type=socket.SOCK_SEQPACKET):
        """slipstreamd started the systemd way: a listening socket at fd 3, LISTEN_FDS=1,
        LISTEN_PID naming the daemon's own pid (the shell's, which exec keeps)."""
        listener = socket.socket(socket.AF_UNIX, sock_type)
        listener.bind(os.path.join(runtime, "matcher.sock"))
        listener.listen(64)
        self.addCleanup(listener.close)
        launcher = ('exec 3<&"$FD"; exec env -u FD LISTEN_FDS=1 LISTEN_FDNAMES=matcher '
                    'LISTEN_PID=$$ "$@"')
        env = dict(os.environ, FD=str(listener.fileno()), SLIPSTREAM_RUNTIME_DIR="/nonexistent")
        proc = subprocess.Popen(["sh", "-c", launcher, "sh", self.daemon, "-v"], env=env,
                                pass_fds=[listener.fileno()], stderr=subprocess.PIPE, text=True)
        self.addCleanup(harness.kill_tree, proc)
        return proc

    def test_socket_activation(self):
        runtime = self.runtime_dir()
        daemon = self.activated(runtime)
        # slipstream-trace must not start a daemon of its own: the activated one pairs.
        env = dict(os.environ, SLIPSTREAMD="/bin/false")
        pingpong_switch(self, self.trace, runtime, env)
        status, exe = daemon_exe(self.daemon, runtime)
        self.assertEqual(status["pid"], daemon.pid, "the activated daemon answers")
        self.assertGreaterEqual(status["pairs_total"], 1, status)
        self.assertEqual(exe, self.daemon)
        self.assertFalse(os.path.exists(os.path.join(runtime, "slipstreamd.log")),
                         "an activated daemon stays in the foreground (logs to stderr)")
        daemon.terminate()
        self.assertEqual(daemon.wait(10), 0)
        self.assertIn("socket activation: listening on", daemon.stderr.read())
        self.assertTrue(os.path.exists(os.path.join(runtime, "matcher.sock")),
                        "the activated socket's file belongs to systemd: it stays")

    def test_socket_activation_with_systemd_socket_activate(self):
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            raise unittest.SkipTest("systemd-socket-activate not installed")
        runtime = self.runtime_dir()
        sock = os.path.join(runtime, "matcher.sock")
        proc = subprocess.Popen([tool, "--seqpacket", "-l", sock, self.daemon],
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(harness.kill_tree, proc)
        fr.wait_until(lambda: os.path.exists(sock), 10, "systemd-socket-activate listening")
        pingpong_switch(self, self.trace, runtime, dict(os.environ, SLIPSTREAMD="/bin/false"))
        status, exe = daemon_exe(self.daemon, runtime)
        self.assertEqual((status["pid"], exe), (proc.pid, self.daemon))

    def test_activated_socket_of_the_wrong_type_is_refused(self):
        runtime = self.runtime_dir()
        daemon = self.activated(runtime, socket.SOCK_STREAM)
        self.assertEqual(daemon.wait(10), 1)
        self.assertIn("not AF_UNIX SOCK_SEQPACKET", daemon.stderr.read())

    def complete(self, command, words, cword=None):
        """COMPREPLY of the installed completion for COMP_WORDS=`words`."""
        script = os.path.join(self.prefix, "share/bash-completion/completions", command)
        cword = len(words) - 1 if cword is None else cword
        quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
        func = "_slipstream_trace" if command == "slipstream-trace" else "_slipstreamd"
        body = (f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={cword}; "
                f"{func} {command} '{words[cword]}' '{words[cword - 1]}'; "
                'printf "%s\\n" "${COMPREPLY[@]}"')
        env = dict(os.environ, PATH=os.path.join(self.prefix, "bin") + ":" + SYSTEM_PATH)
        out = subprocess.run(["bash", "--norc", "-c", body], capture_output=True, text=True,
                             env=env, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        return [l for l in out.stdout.splitlines() if l]

    def test_bash_completion(self):
        for command, binary in (("slipstream-trace", self.trace), ("slipstreamd", self.daemon)):
            help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
            part = help_text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
            options = set(re.findall(r"(?:^|[ ,])(--?[A-Za-z][A-Za-z-]*)", part, re.M))
            self.assertTrue(options <= set(self.complete(command, [command, "-"])), command)
        self.assertEqual(self.complete("slipstream-trace", ["slipstream-trace", "--st"]),
                         ["--stats"])
        self.assertEqual(self.complete("slipstream-trace",
                                       ["slipstream-trace", "--stats", "=", "j"]), ["json"])
        self.assertEqual(self.complete("slipstreamd", ["slipstreamd", "--status", "--wa"]),
                         ["--watch"])
        # From PROGRAM on, the words are the program's: a command, then its arguments.
        self.assertIn("slipstreamd",
                      self.complete("slipstream-trace", ["slipstream-trace", "--", "slipstre"]))
        self.assertIn("slipstreamd", self.complete(
            "slipstream-trace", ["slipstream-trace", "--trace", "slipstre"]))
        self.assertNotIn("--stats", self.complete(
            "slipstream-trace", ["slipstream-trace", "--", "prog", "--st"]))


if __name__ == "__main__":
    harness.main()

#!/usr/bin/env python3
"""The .deb: built from this build (CPack, as scripts/package does), lintian finds no error,
`dpkg -i` installs it, the demo's switch runs with the installed binaries from their installed
paths as root and as nobody, the installed units verify, and `dpkg --purge` leaves no file
behind (find over /usr and /etc before and after).

This test changes the machine's /usr: it is RUN_SERIAL in CTest, and removes the package in
every case (cleanup runs on failure too). It is skipped when a slipstream package is already
installed (not ours to remove), without root, and in sanitized builds.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import fixture_runs as fr
import harness

PACKAGE = "slipstream"
PINGPONG = os.path.join(harness.BUILD, "examples", "pingpong")
TRACE = "/usr/bin/slipstream-trace"
DAEMON = "/usr/bin/slipstreamd"
WATCHED = ["/usr", "/etc"] + (["/lib"] if not os.path.islink("/lib") else [])
USER = "nobody"


def installed(package):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                         text=True)
    return out.returncode == 0 and "installed" in out.stdout and "not-installed" not in out.stdout


def snapshot():
    out = subprocess.run(["find", *WATCHED, "-xdev"], capture_output=True, text=True)
    return set(out.stdout.splitlines())


def kill_installed_daemons():
    harness.kill_by_exe(lambda exe: exe in (DAEMON, TRACE))


class Package(unittest.TestCase):

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (dpkg -i)")
        if os.environ.get("SLIPSTREAM_SANITIZED") == "1":
            raise unittest.SkipTest("a sanitized build is not packaged")
        for tool in ("cpack", "dpkg", "lintian", "runuser"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} not installed (scripts/setup installs it)")
        if installed(PACKAGE):
            raise unittest.SkipTest(f"package {PACKAGE} is already installed")
        self.tmp = tempfile.mkdtemp(prefix="slipstream-package-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def build_deb(self):
        out = subprocess.run(["cpack", "-G", "DEB", "-B", self.tmp], cwd=harness.BUILD,
                             capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        debs = [f for f in os.listdir(self.tmp) if f.endswith(".deb")]
        self.assertEqual(len(debs), 1, debs)
        version = subprocess.run([harness.TRACE_BIN, "--version"], capture_output=True,
                                 text=True).stdout.split()[1]
        self.assertEqual(debs[0], f"{PACKAGE}_{version}_amd64.deb")
        return os.path.join(self.tmp, debs[0])

    def check_lintian(self, deb):
        out = subprocess.run(["lintian", "--tag-display-limit", "0", deb], capture_output=True,
                             text=True, timeout=300)
        tags = [l for l in out.stdout.splitlines() if l[:2] in ("E:", "W:")]
        errors = [l for l in tags if l.startswith("E:")]
        self.assertEqual(errors, [], out.stdout)
        print(f"lintian: {len(errors)} errors; warnings: {tags}", flush=True)

    def check_control(self, deb):
        fields = subprocess.run(["dpkg-deb", "-f", deb, "Depends", "Version"],
                                capture_output=True, text=True, check=True).stdout
        # shlibdeps: the libraries the binaries link, with versions from their symbols files.
        for lib in ("libc6 (>=", "libseccomp2", "libstdc++6"):
            self.assertIn(lib, fields)
        files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                               check=True).stdout
        for unwanted in ("tests/", "bench", "pingpong", "fixture", "_test"):
            self.assertNotIn(unwanted, files)

    def switch(self, run_as=None):
        """The demo's switch with the installed binaries; `run_as`: a user name (runuser)."""
        work = tempfile.mkdtemp(prefix="work-", dir=self.tmp)
        os.chmod(work, 0o755)
        pingpong = os.path.join(work, "pingpong")
        shutil.copy(PINGPONG, pingpong)  # the build tree may not be readable by nobody
        os.chmod(pingpong, 0o755)
        runtime = os.path.join(work, "run")
        os.mkdir(runtime, 0o700)
        prefix = []
        if run_as:
            user = pwd.getpwnam(run_as)
            os.chown(work, user.pw_uid, user.pw_gid)
            os.chown(runtime, user.pw_uid, user.pw_gid)
            prefix = ["runuser", "-u", run_as, "--"]
        env = ["env", "-i", "PATH=/usr/bin:/bin", f"SLIPSTREAM_RUNTIME_DIR={runtime}",
               f"HOME={work}"]
        port_file = os.path.join(work, "port")
        server = subprocess.Popen([*prefix, *env, TRACE, "--", pingpong, "server", port_file],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(harness.kill_tree, server)
        try:
            port = fr.read_port(port_file)
            client = subprocess.run([*prefix, *env, TRACE, "--stats=json", "--", pingpong,
                                     "client", str(port), "200", "1"],
                                    capture_output=True, text=True, timeout=60)
            status = json.loads(subprocess.run([*prefix, *env, DAEMON, "--status", "--json"],
                                               capture_output=True, text=True,
                                               timeout=10).stdout)
        finally:
            server.terminate()
            server.wait(10)
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertIn("is an AF_UNIX socket (listed in /proc/net/unix)", client.stdout)
        stats = json.loads(client.stderr.splitlines()[-1])
        self.assertEqual(stats["connections"]["switched"], 1, stats)
        self.assertEqual(status["pairs_total"], 1, status)
        self.assertEqual(os.readlink(f"/proc/{status['pid']}/exe"), DAEMON)
        uid = pwd.getpwnam(run_as).pw_uid if run_as else 0
        with open(f"/proc/{status['pid']}/status") as f:
            self.assertIn(f"Uid:\t{uid}\t", f.read())
        os.kill(status["pid"], signal.SIGTERM)
        maps = subprocess.run([*prefix, *env, TRACE, "--", "cat", "/proc/self/maps"],
                              capture_output=True, text=True, timeout=30)
        self.assertIn("/usr/lib/slipstream/libslipstream-preload.so", maps.stdout)

    def test_install_switch_remove(self):
        deb = self.build_deb()
        self.check_control(deb)
        self.check_lintian(deb)
        before = snapshot()
        self.addCleanup(self.purge)
        out = subprocess.run(["dpkg", "-i", deb], capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertTrue(installed(PACKAGE))

        self.switch()
        self.switch(run_as=USER)
        man = subprocess.run(["man", "-w", "slipstreamd"], capture_output=True, text=True)
        self.assertEqual(man.stdout.strip(), "/usr/share/man/man8/slipstreamd.8.gz")
        if shutil.which("systemd-analyze"):
            units = [f"/usr/lib/systemd/system/slipstreamd.{k}" for k in ("socket", "service")]
            out = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                                 text=True, timeout=60)
            self.assertEqual((out.returncode, out.stderr), (0, ""))

        kill_installed_daemons()
        for args in (["-r"], ["--purge"]):
            out = subprocess.run(["dpkg", *args, PACKAGE], capture_output=True, text=True,
                                 timeout=300)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertFalse(installed(PACKAGE))
        after = snapshot()
        self.assertEqual(sorted(after - before), [], "left behind by dpkg --purge")
        self.assertEqual(sorted(before - after), [], "removed by dpkg --purge")

    def purge(self):
        kill_installed_daemons()
        if installed(PACKAGE) or subprocess.run(["dpkg-query", "-W", PACKAGE],
                                                capture_output=True).returncode == 0:
            subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, timeout=300)


if __name__ == "__main__":
    harness.main()

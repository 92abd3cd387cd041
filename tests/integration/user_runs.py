"""Runs as another user (nobody) for tests that are run as root: copies of our binaries that user
may execute, a work directory of the user's, and the command prefix that runs a program as it.

A test's own directory is root's and closed; the user can execute nothing in the build tree under
it either, so the binaries are copied to TMP/bin (and the preload library to TMP/preload-fallback,
where the copied slipstream-trace looks for it). Whatever still runs from the copies when the test
ends (a slipstreamd that a supervisor started on demand) is killed by the test's cleanup.
"""

import os
import pwd
import shutil
import unittest

import fixture_runs as fr
import harness

LIBRARY = os.path.join(harness.BUILD, "preload-fallback", "libslipstream-preload.so")


def supervisor_below(pid):
    """The slipstream-trace process among `pid` and its descendants (runuser forks)."""
    for candidate in [pid] + harness.descendants(pid):
        if fr.comm(candidate) == "slipstream-trac":  # comm is cut to 15 characters
            return candidate
    return None


class UserRunsMixin:
    """For a fr.FixtureTest. Call setup_user() in setUp, after the FixtureTest's own."""

    USER = "nobody"

    def setup_user(self, binaries, *, library=False, work_mode=0o700, tools=("runuser",)):
        """Copies `binaries` ({name: path}) to self.bin and, with `library`, the preload library
        (SkipTest if it was not built); makes self.work, the user's (mode `work_mode`); sets
        self.user (the passwd entry) and self.runtime (WORK/runtime, made by the daemon).
        Raises SkipTest naming what is missing: root, the user, a tool."""
        if os.geteuid() != 0:
            raise unittest.SkipTest(f"needs root to run programs as {self.USER}")
        for tool in tools:
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} is not installed")
        try:
            self.user = pwd.getpwnam(self.USER)
        except KeyError:
            raise unittest.SkipTest(f"no user {self.USER}")
        os.chmod(self.tmp, 0o755)
        self.bin = self._readable_dir("bin")
        for name, src in binaries.items():
            self._copy(src, os.path.join(self.bin, name))
        if library:
            if not os.path.exists(LIBRARY):
                raise unittest.SkipTest("libslipstream-preload.so not built")
            lib_dir = self._readable_dir("preload-fallback")
            self._copy(LIBRARY, os.path.join(lib_dir, os.path.basename(LIBRARY)))
        self.addCleanup(harness.kill_by_exe, lambda exe: exe.startswith(self.bin + os.sep))
        self.work = os.path.join(self.tmp, "work")
        os.mkdir(self.work, work_mode)
        os.chown(self.work, self.user.pw_uid, self.user.pw_gid)
        self.runtime = os.path.join(self.work, "runtime")

    def as_user(self, cmd):
        """`cmd` run as the user, with its runtime directory and its work directory as HOME."""
        return ["runuser", "-u", self.USER, "--", "env", f"SLIPSTREAM_RUNTIME_DIR={self.runtime}",
                f"HOME={self.work}", *cmd]

    def _readable_dir(self, name):
        path = os.path.join(self.tmp, name)
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)  # whatever the umask
        return path

    @staticmethod
    def _copy(src, dst):
        shutil.copy(src, dst)
        os.chmod(dst, 0o755)

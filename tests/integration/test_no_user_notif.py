#!/usr/bin/env python3
"""On a kernel without seccomp user notification slipstream-trace runs the program unsupervised,
with a clear warning, never a crash. without_user_notif simulates such a kernel: under its filter
seccomp(2) fails with EINVAL, so the feature probe finds no user notification."""

import fixture_runs as fr
import harness


class NoUserNotification(fr.FixtureTest):

    def run_without(self, cmd, extra=()):
        return harness.run([harness.program("without_user_notif"),
                            *harness.supervised(cmd, extra=extra)])

    def test_program_runs_unsupervised_with_a_warning(self):
        probe = [harness.program("io_uring_probe")]
        native = harness.run(probe)
        result = self.run_without(probe)
        self.assertEqual(result.returncode, 0, result.stderr)
        # Unsupervised for real: io_uring_setup is not refused (ENOSYS) as under supervision.
        self.assertEqual(result.stdout, native.stdout)
        self.assertRegex(result.stderr, r"no seccomp user notification .*running .* unsupervised")

    def test_exit_status_and_options_still_hold(self):
        result = self.run_without(["/bin/sh", "-c", "echo out; exit 7"], extra=["--stats"])
        self.assertEqual((result.returncode, result.stdout), (7, "out\n"), result.stderr)


if __name__ == "__main__":
    fr.main()

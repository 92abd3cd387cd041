#!/usr/bin/env python3
"""Without seccomp user notification slipstream-trace runs the program unsupervised, with a clear
warning, never a crash. without_user_notif refuses it with a seccomp filter: seccomp(2) fails with
EINVAL (an old kernel's answer), so the feature probe finds no user notification, and the warning
must name the filter, not the kernel (this kernel has the feature)."""

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
        # The kernel has it: the message must blame the filter, with its evidence, not the kernel.
        self.assertIn("seccomp(2) fails with EINVAL under the seccomp filter this process was "
                      "started with (Seccomp: 2 in /proc/self/status)", result.stderr)
        self.assertNotIn("lacks", result.stderr)

    def test_exit_status_and_options_still_hold(self):
        result = self.run_without(["/bin/sh", "-c", "echo out; exit 7"], extra=["--stats"])
        self.assertEqual((result.returncode, result.stdout), (7, "out\n"), result.stderr)


if __name__ == "__main__":
    fr.main()

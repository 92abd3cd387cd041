#!/usr/bin/env python3
"""io_uring_setup fails with ENOSYS under slipstream-trace (io_uring I/O would bypass seccomp), and
behaves as natively with --allow-io-uring. io_uring_probe calls the raw syscall, no liburing."""

import fixture_runs as fr
import harness


class IoUring(fr.FixtureTest):

    def probe(self, extra=None):
        cmd = [harness.program("io_uring_probe")]
        if extra is not None:
            cmd = harness.supervised(cmd, extra=extra)
        result = harness.run(cmd)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_enosys_by_default(self):
        self.assertEqual(self.probe([]), "io_uring_setup: -1 ENOSYS\n")

    def test_allowed_behaves_as_native(self):
        native = self.probe()
        # "ok" where the kernel allows io_uring (kernel.io_uring_disabled=0), else its own error.
        self.assertRegex(native, r"^io_uring_setup: (ok|-1 E[A-Z]+)\n$")
        self.assertEqual(self.probe(["--allow-io-uring"]), native)


if __name__ == "__main__":
    fr.main()

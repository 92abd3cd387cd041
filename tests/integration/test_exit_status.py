#!/usr/bin/env python3
"""slipstream-trace ends as its program does, and reports its own failures the way a shell does.

- exit N is reproduced; death by a signal (SIGSEGV from a fault, SIGKILL from outside) is
  reproduced as death by the same signal, so the caller sees returncode -SIG;
- a program that does not exist gives 127, one that cannot be executed 126, each with a message
  naming it;
- wrong usage gives 2 with a message; --help and --version give 0.
"""

import os
import signal

import fixture_runs as fr
import harness


class ExitStatus(fr.FixtureTest):

    def both(self, args, timeout=30):
        native = harness.run([harness.program("lifecycle"), *args], timeout=timeout)
        supervised = harness.run(harness.supervised([harness.program("lifecycle"), *args]),
                                 timeout=timeout)
        return native, supervised

    def test_exit_codes(self):
        for code in (0, 3, 42, 255):
            native, supervised = self.both(["exit", str(code)])
            self.assertEqual(native.returncode, code)
            self.assertEqual(supervised.returncode, code, supervised.stderr)
            self.assertEqual(supervised.stdout, f"exiting {code}\n")

    def test_death_by_sigsegv(self):
        native, supervised = self.both(["segv"])
        self.assertEqual(native.returncode, -signal.SIGSEGV)
        self.assertEqual(supervised.returncode, -signal.SIGSEGV, supervised.stderr)
        self.assertEqual(supervised.stdout, "faulting\n")

    def test_death_by_sigkill_from_outside(self):
        for supervise in (False, True):
            proc = self.start(self.wrap([harness.program("lifecycle"), "wait"], supervise))
            proc.out.wait_for("^ready$")
            pid = fr.program_pid(proc.pid) if supervise else proc.pid
            self.assertEqual(fr.comm(pid), "lifecycle")
            os.kill(pid, signal.SIGKILL)
            code, out, err = proc.wait(20)
            self.assertEqual(code, -signal.SIGKILL, f"supervised={supervise}: {err}")

    def test_program_not_found(self):
        missing = self.path("no-such-program")
        result = harness.run(harness.supervised([missing]))
        self.assertEqual(result.returncode, 127)
        self.assertIn(missing, result.stderr)
        self.assertIn("No such file or directory", result.stderr)
        result = harness.run(harness.supervised(["slipstream-no-such-command-on-path"]))
        self.assertEqual(result.returncode, 127)
        self.assertIn("slipstream-no-such-command-on-path", result.stderr)

    def test_program_not_executable(self):
        plain = self.path("not-executable")
        with open(plain, "w") as f:
            f.write("#!/bin/sh\necho never\n")
        os.chmod(plain, 0o644)
        for target in (plain, self.tmp):  # a file without x permission, and a directory
            result = harness.run(harness.supervised([target]))
            self.assertEqual(result.returncode, 126, result.stderr)
            self.assertIn(target, result.stderr)
            self.assertIn("Permission denied", result.stderr)
            self.assertEqual(result.stdout, "")

    def test_usage_errors(self):
        for args in ([], ["--"], ["--no-such-option", "--", "true"], ["-o"],
                     ["--trace", "-o"], ["--bogus"]):
            result = harness.run([harness.TRACE_BIN, *args])
            self.assertEqual(result.returncode, 2, f"{args}: {result.stderr}")
            self.assertIn("slipstream-trace", result.stderr)
            self.assertIn("--help", result.stderr)

    def test_output_file_cannot_be_opened(self):
        result = harness.run(harness.supervised(
            [harness.program("lifecycle"), "exit", "0"],
            trace_file=os.path.join(self.tmp, "no-such-dir", "trace")))
        self.assertEqual(result.returncode, 2)
        self.assertIn("cannot open", result.stderr)
        self.assertEqual(result.stdout, "", "the program must not run")

    def test_help_and_version(self):
        result = harness.run([harness.TRACE_BIN, "--help"])
        self.assertEqual(result.returncode, 0)
        for option in ("--trace", "--stats", "--no-wait-killable", "--allow-io-uring", "-o"):
            self.assertIn(option, result.stdout)
        result = harness.run([harness.TRACE_BIN, "--version"])
        self.assertEqual(result.returncode, 0)
        self.assertRegex(result.stdout, r"^slipstream-trace \d+\.\d+\.\d+")


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""SIGTERM, SIGINT and SIGHUP sent to slipstream-trace reach the program, once.

`lifecycle catch` prints "ready", catches the three signals and, 300 ms after the first, prints
how often each arrived. Sending a signal to slipstream-trace must look to the program exactly like
sending it to the program natively; a signal the program does not catch must end slipstream-trace
the same way. A signal sent to the whole process group (kill -TERM -PGID, as `timeout` and job
control do) reaches slipstream-trace and the program alike, and must still arrive once.
"""

import fcntl
import os
import pty
import signal
import subprocess
import termios

import fixture_runs as fr
import harness

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalForwarding(fr.FixtureTest):

    def catch(self, sig, supervise, to_group=False):
        proc = self.start(self.wrap([harness.program("lifecycle"), "catch"], supervise),
                          start_new_session=True)
        proc.out.wait_for("^ready$")
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        return proc.wait(20)

    def test_caught_signals_reach_the_program(self):
        for sig in SIGNALS:
            name = signal.Signals(sig).name[3:]
            native = self.catch(sig, False)
            self.assertEqual(native[:2], (0, ["ready", f"caught {name} x1"]))
            supervised = self.catch(sig, True)
            self.assertRunsAlike(native, supervised, f"SIG{name} to slipstream-trace")

    def test_uncaught_signal_ends_both_alike(self):
        for sig in SIGNALS:
            for supervise in (False, True):
                proc = self.start(self.wrap([harness.program("lifecycle"), "wait"], supervise))
                proc.out.wait_for("^ready$")
                os.kill(proc.pid, sig)
                code, out, err = proc.wait(20)
                self.assertEqual(code, -sig, f"{signal.Signals(sig).name} supervised={supervise}:"
                                 f" {err}")
                self.assertEqual(out, ["ready"])

    # Regression (fixed in 70e44ea): the program got a group-wide SIGTERM directly and then once
    # more from slipstream-trace, which forwarded every SI_USER signal.
    #
    # The second copy is only visible when the program has handled the first before it arrives
    # (two pending instances of a standard signal merge), about 60% of runs; 8 runs miss a
    # duplicate with a probability below 0.1%.
    def test_group_signal_arrives_once(self):
        native = self.catch(signal.SIGTERM, False, to_group=True)
        self.assertEqual(native[:2], (0, ["ready", "caught TERM x1"]))
        for attempt in range(8):
            supervised = self.catch(signal.SIGTERM, True, to_group=True)
            self.assertRunsAlike(native, supervised,
                                 f"SIGTERM to the process group (run {attempt + 1})")


    def ctrl_c_at_a_terminal(self, supervise):
        """Runs `lifecycle catch` as the foreground job of a new pty and types ^C."""
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)

        def become_foreground_job():  # runs in the child after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(self.wrap([harness.program("lifecycle"), "catch"], supervise),
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True,
                                preexec_fn=become_foreground_job)
        os.close(slave)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.assertEqual(proc.stdout.readline(), "ready\n")
        os.write(master, b"\x03")  # the terminal sends SIGINT (SI_KERNEL) to the whole job
        out, err = proc.communicate(timeout=20)
        return proc.returncode, ["ready"] + out.splitlines(), err

    def test_ctrl_c_at_a_terminal_arrives_once(self):
        native = self.ctrl_c_at_a_terminal(False)
        self.assertEqual(native[:2], (0, ["ready", "caught INT x1"]))
        supervised = self.ctrl_c_at_a_terminal(True)
        self.assertRunsAlike(native, supervised, "^C at a terminal")


if __name__ == "__main__":
    fr.main()

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
import time

import fixture_runs as fr
import harness

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def dead(pid):
    """True once `pid` has exited (gone, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


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

    # A signal sent to the whole process group reaches the program directly and, because
    # slipstream-trace cannot tell a kill(-pgid) from a kill(pid), once more forwarded: the program
    # shares slipstream-trace's group so that job control and a group SIGKILL work as without it
    # (docs/design.md, "Signals"). So the program sees it once or twice (two pending instances of
    # a standard signal merge), never zero times, and then behaves as natively.
    def test_group_signal_reaches_the_program(self):
        native = self.catch(signal.SIGTERM, False, to_group=True)
        self.assertEqual(native[:2], (0, ["ready", "caught TERM x1"]))
        for attempt in range(4):
            code, out, err = self.catch(signal.SIGTERM, True, to_group=True)
            self.assertEqual(code, 0, err)
            self.assertIn(out, (["ready", "caught TERM x1"], ["ready", "caught TERM x2"]),
                          f"SIGTERM to the process group (run {attempt + 1})")

    def test_group_sigkill_ends_the_program(self):
        """kill -9 of the whole group ends the program too, as it would without slipstream-trace."""
        proc = self.start(self.wrap([harness.program("lifecycle"), "wait"], True),
                          start_new_session=True)
        proc.out.wait_for("^ready$")
        program = [p for p in harness.children_of(proc.pid)
                   if open(f"/proc/{p}/comm").read().strip() == "lifecycle"]
        self.assertEqual(len(program), 1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
        deadline = time.monotonic() + 10
        while not dead(program[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(dead(program[0]), "the program survived a group SIGKILL")

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

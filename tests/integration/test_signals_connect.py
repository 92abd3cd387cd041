#!/usr/bin/env python3
"""A signal during a blocking connect() that waits for its handshake.

The test's own listener (outside supervision, so the connection stays TCP) has a backlog of 0 and
one connection already queued: the program's SYN is dropped and its blocking connect waits for a
retransmission. The test waits until the program is blocked in connect, sends SIGUSR1, and then:
  - SA_RESTART: connect resumes; the test accepts the queued connection, the retransmitted SYN
    gets through, and connect returns 0;
  - no SA_RESTART: connect fails with EINTR.
The socket must still be blocking afterwards. Native, WAIT_KILLABLE_RECV and --no-wait-killable.
DynamicSignalDuringConnect: connect_signal_dyn in hybrid mode, where the library makes this
connect itself (the port has no supervised listener), so the signal interrupts a connect made
with the run's cookie in a register.
"""

import os
import signal
import socket

import fixture_runs as fr
import switch_support as ss

NATIVE, KILLABLE, NOT_KILLABLE = "native", "killable", "not-killable"


class SignalDuringConnect(ss.HybridMixin, fr.FixtureTest):

    def run_case(self, how, restart):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(filler.close)
        cmd = [self.fixture("connect_signal"), "--restart" if restart else "--no-restart",
               "--port", str(port)]
        if how != NATIVE:
            cmd = self.supervise(cmd, extra=["--no-wait-killable"] if how == NOT_KILLABLE
                                     else [])
        proc = self.start(cmd)
        pid = proc.pid if how == NATIVE else fr.program_pid(proc.pid)
        # Blocked in connect, in the kernel (the supervisor let it run: the listener is not
        # supervised) or held by the supervisor: the signal must behave as natively either way.
        fr.wait_blocked_in(pid, {fr.SYS_CONNECT})
        os.kill(pid, signal.SIGUSR1)
        proc.out.wait_for(r"^handler: SIGUSR1$")
        if restart:
            accepted, _ = listener.accept()  # room in the queue: the next SYN retransmission wins
            self.addCleanup(accepted.close)
        code, out, err = proc.wait(30)
        return code, out, err

    def check(self, how, restart):
        code, out, err = self.run_case(how, restart)
        expected = ["handler: SIGUSR1", "connect: 0" if restart else "connect: -1 EINTR",
                    "socket: blocking", "handler calls: 1"]
        self.assertEqual((code, out), (0, expected), f"{how}: stderr {err}")
        if how != NATIVE:
            self.assert_hybrid_used()

    def test_native_reference(self):
        self.check(NATIVE, True)
        self.check(NATIVE, False)

    def test_sa_restart_wait_killable(self):
        self.check(KILLABLE, True)

    def test_sa_restart_no_wait_killable(self):
        self.check(NOT_KILLABLE, True)

    def test_no_sa_restart_wait_killable(self):
        self.check(KILLABLE, False)

    def test_no_sa_restart_no_wait_killable(self):
        self.check(NOT_KILLABLE, False)


class DynamicSignalDuringConnect(SignalDuringConnect):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

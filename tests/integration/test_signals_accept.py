#!/usr/bin/env python3
"""A signal arriving while a program is blocked in a trapped accept() behaves as natively.

accept_signal blocks in one accept() on a blocking listener. The test waits until it is blocked
(/proc/PID/syscall) and, when supervised, until the supervisor holds a copy of the listener and
waits on it in an epoll (the call was received and is being held), then sends SIGUSR1:
  - handler with SA_RESTART: the handler runs once, accept resumes and takes the test's connection;
  - handler without SA_RESTART: the handler runs once and accept fails with EINTR.
The listener must still be blocking afterwards. Each case runs natively, under slipstream-trace
(WAIT_KILLABLE_RECV) and under slipstream-trace --no-wait-killable.
DynamicSignalDuringAccept: accept_signal_dyn in hybrid mode; the test then does not wait for the
supervisor to hold the call, as an accept the library may serve in-process is never held.
"""

import os
import signal
import socket

import fixture_runs as fr
import switch_support as ss

NATIVE, KILLABLE, NOT_KILLABLE = "native", "killable", "not-killable"


class SignalDuringAccept(ss.HybridMixin, fr.FixtureTest):

    def run_case(self, how, restart):
        port_file = self.path("port")
        cmd = [self.fixture("accept_signal"), "--restart" if restart else "--no-restart",
               "--port-file", port_file]
        if how != NATIVE:
            cmd = self.supervise(cmd, extra=["--no-wait-killable"] if how == NOT_KILLABLE
                                     else [])
        proc = self.start(cmd)
        port = fr.read_port(port_file)
        pid = proc.pid if how == NATIVE else fr.program_pid(proc.pid)
        # An accept the library makes in-process may be the accept4 system call.
        accepts = {fr.SYS_ACCEPT, fr.SYS_ACCEPT4} if self.HYBRID else {fr.SYS_ACCEPT}
        fr.wait_blocked_in(pid, accepts)
        if how != NATIVE and not self.HYBRID:
            self.assertEqual(len(fr.socket_inodes(pid)), 1, "accept_signal has one socket")
            fr.wait_held(proc.pid, pid)
        os.kill(pid, signal.SIGUSR1)
        proc.out.wait_for(r"^handler: SIGUSR1$")
        if restart:
            # The call resumes: blocked in accept again (or it has already given up, which the
            # output comparison below reports).
            fr.wait_until(lambda: fr.current_syscall(pid) in accepts or
                          proc.proc.poll() is not None or
                          any(line.startswith("accept:") for line in proc.out.lines),
                          10, "accept resumed after the handler")
            if proc.proc.poll() is None:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.settimeout(10)
                    greeting = b""
                    while not greeting.endswith(b"\n"):
                        data = conn.recv(64)
                        if not data:
                            break
                        greeting += data
                self.assertEqual(greeting, b"hello\n")
        code, out, err = proc.wait(30)
        return code, out, err

    def check(self, how, restart):
        code, out, err = self.run_case(how, restart)
        expected = ["handler: SIGUSR1",
                    "accept: fd peer=127.0.0.1" if restart else "accept: -1 EINTR",
                    "listener: blocking",
                    "handler calls: 1"]
        self.assertEqual((code, out), (0, expected), f"{how}: stderr {err}")
        if how != NATIVE:
            self.assert_hybrid_used()

    def test_native_reference(self):
        self.check(NATIVE, True)
        self.check(NATIVE, False)

    # Regression: held accepts used to be waited for through boost::asio on the pidfd_getfd copy
    # of the listener; asio's async_wait sets O_NONBLOCK (FIONBIO) on it, i.e. on the program's
    # own open file, and a restarted accept then failed with EAGAIN ("listener: non-blocking").
    # Fixed in 3dbac79 (a private epoll).
    def test_sa_restart_wait_killable(self):
        self.check(KILLABLE, True)

    def test_sa_restart_no_wait_killable(self):
        self.check(NOT_KILLABLE, True)

    def test_no_sa_restart_wait_killable(self):
        self.check(KILLABLE, False)

    def test_no_sa_restart_no_wait_killable(self):
        self.check(NOT_KILLABLE, False)


class DynamicSignalDuringAccept(SignalDuringAccept):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""Supervised programs keep working under a storm of signals hitting their trapped calls.

The Go runtime preempts a goroutine that runs for more than ~10 ms by sending SIGURG to its
thread, with handlers installed SA_RESTART; a signal that lands while a thread waits for the
supervisor's answer withdraws the notification (or, with WAIT_KILLABLE_RECV, is delayed until the
answer), and the call is restarted as a new notification. goserver -spin runs busy goroutines so
the runtime preempts all the time, and the test adds a storm of SIGURG to every thread of the
server and the client (tgkill), as the runtime's own preemption does, while 8 Go workers make 160
connections. A static C client with an SA_RESTART SIGURG handler and non-blocking connects gets
the same storm, and so does its dynamically linked build in hybrid mode (its --stats must show
calls served in-process: non-blocking connects made by the library with the cookie, interrupted
by signals). Every byte is verified; the output equals a native run under the same storm.
"""

import ctypes
import os
import re
import signal
import threading

import fixture_runs as fr
import harness
import switch_support as ss

SYS_TGKILL = 234  # x86_64
CONNECTIONS = 160
LIBC = ctypes.CDLL(None, use_errno=True)


def threads_of(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


class SigurgStorm:
    """Sends SIGURG to every thread of some processes about every 0.2 ms until stopped."""

    def __init__(self, pids):
        self.pids = pids
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        targets = []
        for round_number in range(10**9):
            if self._stop.wait(0.0002):
                return
            if round_number % 50 == 0:  # threads come and go: refresh the list every ~10 ms
                targets = [(pid, tid) for pid in self.pids for tid in threads_of(pid)]
            for pid, tid in targets:
                if LIBC.syscall(SYS_TGKILL, pid, tid, signal.SIGURG) == 0:
                    self.sent += 1

    def stop(self):
        self._stop.set()
        self._thread.join(10)


class SignalStorm(fr.FixtureTest):

    def run_under_storm(self, supervise, extra=(), c_client=None, client_stats=None):
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server_cmd = [harness.program("goserver"), "-port-file", port_file, "-mode", "sink",
                      "-count", str(CONNECTIONS), "-spin", "2", "-sigurg"]
        client_cmd = [harness.program("goclient"), "-port-file", port_file, "-mode", "sink",
                      "-bytes", "30000", "-chunk", "3000", "-workers", "8",
                      "-conns", str(CONNECTIONS // 8)]
        if c_client:
            client_cmd = [harness.program(c_client), "--port-file", port_file,
                          "--mode", "sink", "--bytes", "30000", "--chunk", "3000",
                          "--threads", "8", "--conns", str(CONNECTIONS // 8),
                          "--nonblock-connect", "--sigurg-handler", "--timeout", "60"]
        server = self.start(self.wrap(server_cmd, supervise, extra=extra))
        fr.read_port(port_file)
        client_extra = [*extra, "--stats", "-o", client_stats] if client_stats else extra
        client = self.start(self.wrap(client_cmd, supervise, extra=client_extra))
        pids = [server.pid, client.pid]
        if supervise:
            pids = [fr.program_pid(server.pid), fr.program_pid(client.pid)]
        storm = SigurgStorm(pids)
        try:
            client_result = client.wait(90)
            server_result = server.wait(30)
        finally:
            storm.stop()
        self.assertGreater(storm.sent, 0)
        return server_result, client_result

    def check(self, extra, c_client=None):
        native = self.run_under_storm(False, c_client=c_client)
        self.assertEqual(native[1][0], 0, native)
        hybrid = c_client is not None and c_client.endswith("_dyn")
        stats = self.path("client.stats") if hybrid else None
        supervised = self.run_under_storm(True, extra, c_client=c_client, client_stats=stats)
        if hybrid:
            self.assertGreaterEqual(ss.preload_in_process(stats, "socket"), CONNECTIONS,
                                    "the client's socket() calls served in-process")
        # The client first: its errors name the failing calls.
        self.assertRunsAlike(native[1], supervised[1], "client")
        self.assertRunsAlike(native[0], supervised[0], "Go server")
        self.assertEqual(supervised[1][1], [f"client: mode=sink connections={CONNECTIONS} "
                                            f"bytes={CONNECTIONS * 30000} errors=0"])
        received = [re.search(r"SIGURG received (\d+)", line) for line in supervised[0][2]]
        received = [int(m.group(1)) for m in received if m]
        self.assertEqual(len(received), 1, supervised[0][2])
        self.assertGreater(received[0], 0, "the server saw SIGURG while serving")

    def test_go_wait_killable(self):
        self.check([])

    # Regression (fixed in 2e55e86): without WAIT_KILLABLE_RECV a signal between the switch and
    # the answer left some connections reset (ECONNRESET in the client, EPIPE in the server).
    def test_go_no_wait_killable(self):
        self.check(["--no-wait-killable"])

    def test_c_client_wait_killable(self):
        self.check([], c_client="tcp_client")

    # Regression: without WAIT_KILLABLE_RECV, a signal could withdraw a non-blocking connect()
    # after its socket was switched, and the restarted connect got EISCONN instead of EINPROGRESS.
    # Checks that the C client's connections and exit status match the native run.
    def test_c_client_no_wait_killable(self):
        self.check(["--no-wait-killable"], c_client="tcp_client")

    # Hybrid mode: the library makes the client's socket() and its non-blocking connect() calls
    # (the Go server is supervised, so the connects go to the supervisor) while the storm lasts.
    def test_c_dyn_client_wait_killable(self):
        self.check([], c_client="tcp_client_dyn")

    def test_c_dyn_client_no_wait_killable(self):
        self.check(["--no-wait-killable"], c_client="tcp_client_dyn")


if __name__ == "__main__":
    fr.main()

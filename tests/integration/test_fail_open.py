#!/usr/bin/env python3
"""Fail open: `kill -9` of slipstream-trace leaves the program running and its socket calls working.

The supervisor is the slipstream-trace process; its shepherd is a child named slipstream-shep
that holds a copy of the seccomp listener. After the supervisor is killed the shepherd answers
the notification the supervisor had received but not answered (a server blocked in accept) and
every later one with CONTINUE, so nothing fails with ENOSYS. Also checked here: the listener fd is
never left open in the program (before or after an exec), which would make trapped calls hang
rather than fail open.

DynamicFailOpen runs the client and server tests with tcp_client_dyn and tcp_server_dyn in hybrid
mode: the library's calls (made with the cookie) never needed the supervisor, and the calls it
leaves to the supervisor get the shepherd's CONTINUE.
"""

import os
import signal
import time

import fixture_runs as fr
import harness
import switch_support as ss

SECCOMP_LISTENER = "anon_inode:seccomp notify"


def alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class FailOpen(ss.HybridMixin, fr.FixtureTest):

    def kill_supervisor(self, proc):
        """Kills slipstream-trace with SIGKILL; returns (program pid, shepherd pid)."""
        program = fr.program_pid(proc.pid)
        shepherd = fr.shepherd_pid(proc.pid)
        self.track(program)
        self.assertTrue(fr.comm(proc.pid).startswith("slipstream-tra"))
        self.assertEqual(parent_of(shepherd), proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        self.assertEqual(proc.proc.wait(10), -signal.SIGKILL)
        time.sleep(0.2)  # a grace period in which a failing program would die; not a sync
        self.assertTrue(alive(program), "the program must survive its supervisor; its stderr: "
                        f"{proc.err.snapshot()}")
        self.assertTrue(alive(shepherd), "the shepherd takes over")
        self.assert_library_loaded(program)
        return program, shepherd

    # Regression: while held accepts made the listener non-blocking (see test_signals_accept.py),
    # the accept the shepherd answered with CONTINUE returned EAGAIN and the server gave up.
    def test_server_blocked_in_accept(self):
        port_file = self.path("port")
        server = self.start(harness.supervised(
            [self.fixture("tcp_server"), "--port-file", port_file, "--mode", "sink",
             "--loop", "blocking", "--concurrency", "single", "--count", "3"]))
        port = fr.read_port(port_file)
        program = fr.program_pid(server.pid)
        fr.wait_blocked_in(program, {fr.SYS_ACCEPT4})
        if not self.HYBRID:  # an accept the library serves in-process is never held
            fr.wait_held(server.pid, program)
        program, shepherd = self.kill_supervisor(server)
        # The accept the dead supervisor was holding, and the later ones, take these connections.
        client = harness.run([self.fixture("tcp_client"), "--port", str(port), "--mode", "sink",
                              "--bytes", "50000", "--conns", "3", "--timeout", "20"], timeout=30)
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertEqual(client.stdout, "client: mode=sink connections=3 bytes=150000 errors=0\n")
        line = server.out.wait_for(r"^server: ", 20)
        self.assertEqual(line, "server: mode=sink connections=3 bytes_in=150000 bytes_out=69 "
                               "peer_host=127.0.0.1 errors=0", server.err.lines)
        fr.wait_until(lambda: not alive(program), 10, "the orphaned server's exit")
        fr.wait_until(lambda: not alive(shepherd), 10, "the shepherd's exit after the program")

    def check_looping_client(self, supervise_server):
        port_file = self.path("port")
        total = 300
        server = self.start(self.wrap(
            [self.fixture("tcp_server"), "--port-file", port_file, "--mode", "sink",
             "--loop", "epoll", "--count", str(total)], supervise_server))
        port = fr.read_port(port_file)
        client = self.start(harness.supervised(
            [self.fixture("tcp_client"), "--port", str(port), "--mode", "sink",
             "--bytes", "20000", "--conns", str(total), "--pause-ms", "3", "--progress",
             "--timeout", "60"]))
        client.out.wait_for(r"^client: progress 20$", 20)
        program, shepherd = self.kill_supervisor(client)
        # Later connections of the orphaned client: socket, connect, getpeername, getsockname,
        # shutdown all go through the shepherd's CONTINUE.
        client.out.wait_for(r"^client: progress 60$", 20)
        final = client.out.wait_for(r"^client: mode=", 60)
        self.assertEqual(final, f"client: mode=sink connections={total} bytes={total * 20000} "
                                "errors=0", client.err.lines)
        self.assertEqual(client.err.lines, [])
        code, out, err = server.wait(30)
        self.assertEqual(code, 0, err)
        reply = f"20000 {0:016x}\n"  # what the sink server sends back per connection
        self.assertEqual(out, [f"server: mode=sink connections={total} bytes_in={total * 20000} "
                               f"bytes_out={total * len(reply)} peer_host=127.0.0.1 errors=0"])
        fr.wait_until(lambda: not alive(shepherd), 10, "the shepherd's exit after the program")

    def test_looping_client_native_server(self):
        self.check_looping_client(False)

    def test_looping_client_supervised_server(self):
        self.check_looping_client(True)

    def test_listener_never_open_in_program(self):
        for cmd in ([harness.program("lifecycle"), "wait"],
                    [harness.program("exec_static"), harness.program("lifecycle"), "wait"]):
            proc = self.start(harness.supervised(cmd))
            proc.out.wait_for("^ready$")
            program = fr.program_pid(proc.pid)
            self.assertEqual(fr.comm(program), "lifecycle")
            # The listener may still be in flight in the launcher's socket when the program is
            # already running (the child sends it, then execs; the supervisor receives it when it
            # is next scheduled), so wait for it rather than look once.
            fr.wait_until(lambda: SECCOMP_LISTENER in fr.fd_links(proc.pid).values(), 10,
                          "the supervisor holds the listener (the check itself works)")
            links = fr.fd_links(program)
            self.assertNotIn(SECCOMP_LISTENER, links.values(), links)
            self.assertEqual(sorted(links), [0, 1, 2], links)
            os.kill(program, signal.SIGKILL)
            proc.wait(10)


class DynamicFailOpen(FailOpen):
    HYBRID = True
    test_listener_never_open_in_program = None  # lifecycle has no dynamic build; not a switch test


if __name__ == "__main__":
    fr.main()

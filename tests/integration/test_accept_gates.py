#!/usr/bin/env python3
"""Hybrid mode's in-process accept (docs/design.md, "Accept in the program") when the connection's
switch outlives the client's supervisor.

A supervised client connects to a supervised, preloaded server, writes, closes and exits before
the server accepts: its slipstream-trace exits too (and lowers the `switching` gate it raised).
The byte the client wrote sits in the AF_UNIX server end the daemon pushed to the server's
supervisor. The server's later accept must still get that byte, as over TCP, whether it accepts
in-process (libslipstream-preload.so) or through the supervisor.

With two servers sharing the port (SO_REUSEPORT, each under its own slipstream-trace), the daemon
pushes the end to neither and holds it until one claims it: the same must hold.
"""

import os
import signal

import fixture_runs as fr
import harness
import switch_support as ss
import test_preload as tp

# Connects, writes one byte, says so and keeps the connection until its stdin ends.
HOLDING_CLIENT = ("import socket, sys\n"
                  "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
                  "s.sendall(b'x')\n"
                  "print('sent', flush=True)\n"
                  "sys.stdin.read()\n")

CLIENT = ("import socket, sys\n"
          "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
          "s.sendall(b'x')\n"
          "s.close()\n")


# A CPython server on a SO_REUSEPORT listener (port 0: a new port, written to argv[1]; else
# argv[2]); after one line on stdin it accepts what is queued and reads one byte.
REUSEPORT_SERVER = """
import select, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[2])))
s.listen(8)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
sys.stdin.readline()
if select.select([s], [], [], 2)[0]:
    c, _ = s.accept()
    c.settimeout(10)
    print("got", len(c.recv(1)))
else:
    print("none")
"""


class AcceptAfterTheClientsSupervisorLeft(fr.FixtureTest):

    def run_case(self, supervise):
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server_stats = self.path("server.stats")
        cmd = [harness.program("accept_later_dyn"), "--port-file", port_file]
        if supervise:
            server = ss.Gated(self, harness.supervised(ss.after_gate(cmd), stats=True,
                                                       extra=["-o", server_stats]))
            server.start_program()
        else:
            server = ss.Gated(self, cmd)
        port = fr.read_port(port_file)
        client_cmd = ["python3", "-c", CLIENT, str(port)]
        client_stats = self.path("client.stats")
        if supervise:
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd), stats=True,
                                                       extra=["-o", client_stats]))
            client.start_program()
            code, _, err = client.finish()
        else:
            done = harness.run(client_cmd)
            code, err = done.returncode, done.stderr
        self.assertEqual(code, 0, err)
        if supervise:
            # The client's connection was switched, and its supervisor has exited.
            counts = ss.read_stats(client_stats)
            self.assertEqual(counts["switched"], 1, counts)
        server.go()
        code, out, err = server.finish(timeout=30)
        if supervise:
            self.assert_gates_lowered(port)
        return code, out, "\n".join(err)

    def assert_gates_lowered(self, port):
        # Every raise (the client's supervisor, the server's inbox, the daemon's pending pair) is
        # lowered once the pair is settled: a count left behind would cost every later accept on
        # the port a notification.
        fr.wait_until(lambda: tp.gate_counts(port) == (0, 0), 10, "the gates of the port at 0")

    def run_shared_port(self, supervise):
        ports = [self.path("port1"), self.path("port2")]
        for p in ports:
            if os.path.exists(p):
                os.unlink(p)
        servers = []
        port = 0
        for port_file in ports:
            cmd = ["python3", "-c", REUSEPORT_SERVER, port_file, str(port)]
            server = ss.Gated(self, harness.supervised(ss.after_gate(cmd)) if supervise else cmd)
            if supervise:
                server.start_program()
            port = fr.read_port(port_file)
            servers.append(server)
        client_cmd = ["python3", "-c", CLIENT, str(port)]
        if supervise:
            client_stats = self.path("client.stats")
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd), stats=True,
                                                       extra=["-o", client_stats]))
            client.start_program()
            code, _, err = client.finish()
            self.assertEqual(code, 0, err)
            counts = ss.read_stats(client_stats)
            self.assertEqual(counts["switched"], 1, counts)
        else:
            self.assertEqual(harness.run(client_cmd).returncode, 0)
        results = []
        for server in servers:
            server.go()
            code, out, err = server.finish(timeout=30)
            self.assertEqual(code, 0, err)
            results += out
        if supervise:
            self.assert_gates_lowered(port)
        return sorted(results)

    def test_gates_of_a_client_supervisor_killed_mid_switch_are_lowered(self):
        """`kill -9` of the client's slipstream-trace while its switch awaits the server's accept:
        the count it raised must not stay (the daemon lowers what its ledger holds when its
        session ends), or every later accept on the port would go to the server's supervisor."""
        port_file = self.path("port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        server_stats = self.path("server.stats")
        cmd = [harness.program("accept_later_dyn"), "--port-file", port_file]
        server = ss.Gated(self, harness.supervised(ss.after_gate(cmd), stats=True,
                                                   extra=["-o", server_stats]))
        server.start_program()
        port = fr.read_port(port_file)
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ["python3", "-c", HOLDING_CLIENT, str(port)])))
        client.start_program()
        client.wait_line(r"^sent")
        program = fr.program_pid(client.pid)
        self.track(program)
        # Raised by the client's supervisor, the daemon (pending pair) and the server's supervisor
        # (the pushed end) until the server's accept installs the end; the last two once the
        # daemon has read the client's kConnected (one-way) and pushed the end.
        fr.wait_until(lambda: tp.gate_counts(port) == (3, 0), 10, "the three raises")
        os.kill(client.pid, signal.SIGKILL)
        self.assertEqual(client.proc.wait(10), -signal.SIGKILL)
        fr.wait_until(lambda: tp.gate_counts(port) == (2, 0), 10,
                      "the killed supervisor's count lowered by the daemon")
        server.go()
        code, out, err = server.finish(timeout=30)
        self.assertEqual((code, out), (0, ["accept: fd peer=127.0.0.1 read=1"]), err)
        self.assertEqual(ss.read_stats(server_stats)["switched"], 1)
        self.assert_gates_lowered(port)

    def test_byte_written_before_the_accept_arrives_on_a_shared_port(self):
        native = self.run_shared_port(False)
        self.assertEqual(native, ["got 1", "none"])
        self.assertEqual(self.run_shared_port(True), native)

    def test_byte_written_before_the_accept_arrives(self):
        native = self.run_case(False)
        self.assertEqual(native[:2], (0, ["accept: fd peer=127.0.0.1 read=1"]))
        supervised = self.run_case(True)
        self.assertRunsAlike(native, supervised, "accept after the client's supervisor exited")


if __name__ == "__main__":
    fr.main()

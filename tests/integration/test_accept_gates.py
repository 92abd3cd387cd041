#!/usr/bin/env python3
"""Hybrid mode's in-process accept (docs/design.md, "Accept in the program") when the connection's
switch outlives the client's supervisor.

A supervised client connects to a supervised, preloaded server, writes, closes and exits before
the server accepts: its slipstream-trace exits too (and lowers the `switching` gate it raised).
The byte the client wrote sits in the AF_UNIX server end the daemon pushed to the server's
supervisor. The server's later accept must still get that byte, as over TCP, whether it accepts
in-process (libslipstream-preload.so) or through the supervisor.
"""

import os

import fixture_runs as fr
import harness
import switch_support as ss

CLIENT = ("import socket, sys\n"
          "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
          "s.sendall(b'x')\n"
          "s.close()\n")


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
        return code, out, "\n".join(err)

    def test_byte_written_before_the_accept_arrives(self):
        native = self.run_case(False)
        self.assertEqual(native[:2], (0, ["accept: fd peer=127.0.0.1 read=1"]))
        supervised = self.run_case(True)
        self.assertRunsAlike(native, supervised, "accept after the client's supervisor exited")


if __name__ == "__main__":
    fr.main()

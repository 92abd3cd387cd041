#!/usr/bin/env python3
"""slipstream-trace works for an unprivileged user (here: nobody, via runuser).

The binaries are copied into a fresh 0755 directory first, because the build tree may not be
readable by nobody. A supervised server and a supervised client run as nobody; the outputs must
equal a native run, and the traces must show the emulated calls (accept4 answered with the new fd
and its peer, getsockname with the address): the supervisor could open pidfds, copy fds and read
and write the programs' memory without privileges.
"""

import os
import stat

import fixture_runs as fr
import harness
import user_runs as ur

USER = "nobody"


class NonRoot(ur.UserRunsMixin, fr.FixtureTest):
    USER = USER

    def setUp(self):
        super().setUp()
        sources = {"slipstream-trace": harness.TRACE_BIN,
                   "tcp_server": harness.program("tcp_server"),
                   "tcp_client": harness.program("tcp_client")}
        daemon = os.path.join(harness.BUILD, "matcher", "slipstreamd")
        if os.path.exists(daemon):
            sources["slipstreamd"] = daemon  # found beside slipstream-trace
        # The cleanup it adds runs after the processes are killed: whatever still runs from the
        # copied binaries (the slipstreamd that slipstream-trace started here) goes too.
        self.setup_user(sources)

    def pair(self, supervise):
        port_file = os.path.join(self.work, "port")
        server = [os.path.join(self.bin, "tcp_server"), "--port-file", port_file,
                  "--mode", "sink", "--loop", "epoll", "--count", "4"]
        client = [os.path.join(self.bin, "tcp_client"), "--port-file", port_file,
                  "--mode", "sink", "--bytes", "40000", "--conns", "4"]
        if supervise:
            trace = os.path.join(self.bin, "slipstream-trace")
            server = [trace, "--trace", "-o", os.path.join(self.work, "server.trace"), "--",
                      *server]
            client = [trace, "--trace", "-o", os.path.join(self.work, "client.trace"), "--",
                      *client]
        if os.path.exists(port_file):
            os.unlink(port_file)
        server_proc = self.start(self.as_user(server))
        port = fr.read_port(port_file)
        client_proc = self.start(self.as_user(client))
        return server_proc.wait(30), client_proc.wait(60), port

    def test_supervised_as_nobody(self):
        native = self.pair(False)
        self.assertEqual(native[1][0], 0, native)
        supervised = self.pair(True)
        self.assertRunsAlike(native[0], supervised[0], "server as nobody")
        self.assertRunsAlike(native[1], supervised[1], "client as nobody")
        port = supervised[2]
        server_trace = os.path.join(self.work, "server.trace")
        self.assertEqual(os.stat(server_trace).st_uid, self.user.pw_uid)
        self.assertFalse(os.stat(server_trace).st_mode & stat.S_IWOTH)
        s = harness.read_trace(server_trace)
        c = harness.read_trace(os.path.join(self.work, "client.trace"))
        accepts = [r for r in fr.calls(s, "accept4") if r["result"].isdigit()]
        self.assertEqual(len(accepts), 4, s)
        self.assertTrue(all(fr.note_addr(r).startswith("127.0.0.1:") for r in accepts))
        connects = fr.calls(c, "connect")
        self.assertEqual(len(connects), 4)
        self.assertTrue(all(r["args"].endswith(f", 127.0.0.1:{port}") and
                            r["result"] in fr.CONNECT_BLOCKING
                            for r in connects), connects)
        names = {fr.note_addr(r) for r in fr.calls(c, "getsockname") if r["result"] == "0"}
        self.assertEqual(names, {fr.note_addr(r) for r in accepts})


if __name__ == "__main__":
    fr.main()

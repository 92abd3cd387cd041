#!/usr/bin/env python3
"""Switching works for an unprivileged user (nobody, via runuser), with kernel evidence.

slipstream-trace, slipstreamd and the C fixture are copied into a fresh 0755 directory (the build
tree may not be readable by nobody). A supervised server and a supervised client run as nobody
with SLIPSTREAM_RUNTIME_DIR in a fresh directory nobody owns: the first slipstream-trace starts
nobody's own slipstreamd (uid nobody, 0700 directory, 0600 socket), the connection is switched
(both fds AF_UNIX and connected to each other, the daemon lists the pair), and 1 MiB is echoed
byte for byte.

DynamicSwitchNonRoot does the same with switch_peer_dyn in hybrid mode, libslipstream-preload.so
copied where the copied slipstream-trace looks for it (../preload-fallback/): the library maps
nobody's listener table and counters, and --stats must show calls it served in-process.
"""

import os
import stat

import fixture_runs as fr
import harness
import switch_support as ss
import user_runs as ur

USER = "nobody"


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


class SwitchNonRoot(ss.EvidenceMixin, ur.UserRunsMixin, fr.FixtureTest):
    HYBRID = False
    USER = USER

    def setUp(self):
        super().setUp()
        peer = "switch_peer_dyn" if self.HYBRID else "switch_peer"
        self.setup_user({"slipstream-trace": harness.TRACE_BIN, "slipstreamd": ss.DAEMON_BIN,
                         "switch_peer": harness.program(peer)}, library=self.HYBRID)

    def status(self):
        return ss.daemon_status(prefix=self.as_user([]),
                                daemon=os.path.join(self.bin, "slipstreamd"))

    def test_switched_pair_as_nobody(self):
        trace = os.path.join(self.bin, "slipstream-trace")
        peer = os.path.join(self.bin, "switch_peer")
        port_file = os.path.join(self.work, "port")
        common = ["--mode", "echo", "--bytes", str(1 << 20), "--hold"]
        stats = {role: os.path.join(self.work, f"{role}.stats") for role in ("server", "client")}
        opts = {role: ["--stats", "-o", stats[role]] if self.HYBRID else []
                for role in ("server", "client")}
        server = ss.Gated(self, self.as_user(
            [trace, *opts["server"], "--", peer, "server", "--port-file", port_file, *common]))
        fr.read_port(port_file)
        client = ss.Gated(self, self.as_user(
            [trace, *opts["client"], "--",
             *ss.after_gate([peer, "client", "--port-file", port_file, *common])]))
        client_supervisor = fr.wait_until(lambda: ur.supervisor_below(client.pid), 10,
                                          "the client's slipstream-trace")
        client.start_program(status=self.status, supervisor=client_supervisor)
        c, s = client.ready(), server.ready()

        # Everything runs as nobody, with nobody's own daemon and private directory.
        status = self.status()
        for pid in (c["pid"], s["pid"], client_supervisor, status["pid"]):
            self.assertEqual(uid_of(pid), self.user.pw_uid, f"pid {pid}")
        st = os.stat(self.runtime)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (self.user.pw_uid, 0o700))
        st = os.stat(status["socket"])
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode) & 0o077), (self.user.pw_uid, 0))
        self.assertEqual({u["uid"] for u in status["supervisors"]}, {self.user.pw_uid})

        self.assert_switched(c, s, status=self.status)
        client.go()
        server.go()
        client_result, server_result = client.finish(), server.finish()
        n = 1 << 20
        self.assertEqual((client_result[0], ss.program_lines(client_result[1])),
                         (0, [f"client: mode=echo connections=1 bytes_out={n} bytes_in={n} "
                              "errors=0"]), client_result[2])
        self.assertEqual((server_result[0], ss.program_lines(server_result[1])),
                         (0, [f"server: mode=echo connections=1 bytes_in={n} bytes_out={n} "
                              "errors=0"]), server_result[2])
        if self.HYBRID:
            for role, path in stats.items():
                self.assertGreaterEqual(ss.preload_in_process(path, "socket"), 1,
                                        f"{role}: no call served in-process")
                self.assertEqual(ss.read_stats(path)["switched"], 1, role)


class DynamicSwitchNonRoot(SwitchNonRoot):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

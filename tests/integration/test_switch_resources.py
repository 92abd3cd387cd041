#!/usr/bin/env python3
"""Short switched connections leave nothing behind in the supervisors or the daemon.

A supervised static C client makes up to 100 000 short connections (connect, echo 16 bytes,
half-close, close) to a supervised server, every one switched. On this 2-core test machine such
a cycle costs about 0.8 ms, so 100 000 take about 80 s alone and more under ctest -j2: the
client stops after 40 s of cycles (--duration) or at 100 000, whichever comes first, and the test
prints how many it made (SLIPSTREAM_RESOURCES_SECONDS=300 lets it reach 100 000). Baselines are taken after a warm-up of 2 000 connections, once the
daemon lists no live connection. At the end, with both programs still running and every
connection closed: slipstreamd --status lists no live connection within seconds, and the fd counts
(/proc/PID/fd) of both supervisors and the daemon are back within 3 of their baselines and their
resident memory grew by at most 4 MiB.
"""

import os
import sys
import time

import fixture_runs as fr
import harness
import switch_support as ss

WARM_UP, MOST = 2000, 100000
SECONDS = int(os.environ.get("SLIPSTREAM_RESOURCES_SECONDS", "40"))
FD_MARGIN, RSS_MARGIN_KIB = 3, 4096
# AddressSanitizer keeps freed memory in quarantine (256 MiB by default): RSS says nothing there.
CHECK_RSS = os.environ.get("SLIPSTREAM_SANITIZED", "0") != "1"


class Resources(fr.FixtureTest):

    def measure(self, pids):
        for name, pid in pids.items():
            self.assertTrue(ss.alive(pid), f"{name} (pid {pid}) is gone; status: "
                                           f"{ss.daemon_status()}")
        return {name: (ss.fd_count(pid), ss.rss_kib(pid)) for name, pid in pids.items()}

    def settled(self):
        """Waits until the daemon lists no live connection and the fd counts stop moving."""
        fr.wait_until(lambda: ss.daemon_status()["connections_total"] == 0, 20,
                      "slipstreamd listing no live connection")
        last = {}

        def stable():
            self.measure(self.pids)
            now = {name: ss.fd_count(pid) for name, pid in self.pids.items()}
            same = now == last
            last.clear()
            last.update(now)
            time.sleep(1.1)  # longer than the supervisors' release sweep: compare two sweeps
            return same
        fr.wait_until(stable, 20, "fd counts settled")

    def test_short_connections(self):
        port_file, client_stats = self.path("port"), self.path("client.stats")
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, "--count", "0", "--mode", "echo",
                      "--timeout", "0")))
        fr.read_port(port_file)
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ss.c_peer("client", "--port-file", port_file, "--count", str(MOST), "--mode", "echo",
                      "--bytes", "16", "--duration", str(SECONDS), "--pause-at", str(WARM_UP),
                      "--hold-exit", "--timeout", "0")), stats=True, extra=["-o", client_stats]))
        client.start_program()
        client.wait_line(r"^paused ", 60)
        self.pids = {"client's slipstream-trace": client.pid,
                     "server's slipstream-trace": server.pid,
                     "slipstreamd": ss.daemon_status()["pid"]}
        self.settled()
        before = self.measure(self.pids)
        started = time.monotonic()
        client.go()
        summary = client.wait_line(r"^client: ", SECONDS + 120)
        took = time.monotonic() - started
        client.wait_line(r"^done ")
        made = int(summary.split("connections=")[1].split()[0])
        print(f"\n{made} connections ({made - WARM_UP} after the warm-up in {took:.0f} s)",
              file=sys.stderr)
        self.assertEqual(summary, f"client: mode=echo connections={made} bytes_out={16 * made} "
                                  f"bytes_in={16 * made} errors=0")
        # Not a speed check (bench/ measures speed): enough connections for a leak of one fd or a
        # few hundred bytes per connection to stand out above the margins. The sanitized build
        # runs several times slower.
        self.assertGreaterEqual(made, 5000 if not CHECK_RSS else 20000,
                                "too few connections for the leak checks to mean anything")

        self.settled()
        after = self.measure(self.pids)
        for name in self.pids:
            (fds_before, rss_before), (fds_after, rss_after) = before[name], after[name]
            print(f"{name}: fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB",
                  file=sys.stderr)
            self.assertLessEqual(fds_after, fds_before + FD_MARGIN,
                                 f"{name}: {fds_before} fds before, {fds_after} after")
            if CHECK_RSS:
                self.assertLessEqual(rss_after - rss_before, RSS_MARGIN_KIB,
                                     f"{name}: RSS {rss_before} KiB before, {rss_after} KiB after")
        code, out, err = client.finish(30)
        self.assertEqual(code, 0, err)
        counts = ss.read_stats(client_stats)
        self.assertEqual((counts["connects"], counts["switched"], counts["relayed"],
                          counts["tcp"]), (made, made, 0, 0), counts)


if __name__ == "__main__":
    fr.main()

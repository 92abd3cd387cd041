#!/usr/bin/env python3
"""Socket options a program set before its socket was switched, and shutdowns by one thread while
another waits, behave as over TCP (regressions found in review).

tests/programs/c/switch_options.c runs a client and a server in one process tree; each mode
prints one line. The test runs it natively and under slipstream-trace, requires the connection to
have been switched (--stats), and compares the lines. A hang prints HANG (exit 3) within 5 s.
- rcvtimeo-before-connect: SO_RCVTIMEO set before connect() was lost with the TCP socket, and
  the read blocked forever;
- linger-before-connect: SO_LINGER {1, 0} set before connect() did not reset the peer;
- linger-taken-back: SO_LINGER {1, 0} then {0, 0} still reset the peer;
- shutdown-wakes-reader: shutdown(SHUT_RDWR) did not wake a thread blocked in read();
- sndtimeo-after-shut-rd: the end installed at SHUT_RD lost SO_SNDTIMEO, and writes blocked.
DynamicSwitchOptions runs them with switch_options_dyn in hybrid mode.
"""

import fixture_runs as fr
import harness
import switch_support as ss

MODES = ["rcvtimeo-before-connect", "linger-before-connect", "linger-taken-back",
         "shutdown-wakes-reader", "sndtimeo-after-shut-rd"]


class SwitchOptions(ss.HybridMixin, fr.FixtureTest):

    def compare(self, mode):
        program = self.fixture("switch_options")
        native = harness.run([program, mode], timeout=30)
        self.assertEqual(native.returncode, 0, native.stderr + native.stdout)
        stats = self.path(f"{mode}.stats")
        switched = harness.run(self.supervise([program, mode], stats=True, extra=["-o", stats]),
                               timeout=30)
        self.assertEqual(switched.returncode, 0, switched.stderr + switched.stdout)
        counts = ss.read_stats(stats)
        self.assertIsNotNone(counts, f"no --stats summary in {stats}")
        self.assertEqual(counts["switched"], 2, counts)  # the client's end and the server's
        self.assertEqual(switched.stdout, native.stdout)
        self.assert_hybrid_used()
        return native.stdout

    def test_rcvtimeo_set_before_connect(self):
        self.assertEqual(self.compare("rcvtimeo-before-connect"), "client read: -1 EAGAIN\n")

    def test_linger_set_before_connect(self):
        self.assertEqual(self.compare("linger-before-connect"),
                         "server read after the client's close: -1 ECONNRESET\n")

    def test_linger_taken_back(self):
        self.assertEqual(self.compare("linger-taken-back"),
                         "server read after the client's close: 0\n")

    def test_shutdown_wakes_a_blocked_reader(self):
        self.assertEqual(self.compare("shutdown-wakes-reader"),
                         "blocked reader after shutdown(SHUT_RDWR): 0\n")

    def test_sndtimeo_survives_shut_rd(self):
        self.assertEqual(self.compare("sndtimeo-after-shut-rd"),
                         "writes to a peer that does not read: -1 EAGAIN\n")


class DynamicSwitchOptions(SwitchOptions):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""bench/run's measurement loop (harness.workload.run_workload) with stand-in workloads: the
order of the variants, what a failing sample, set-up or teardown does, and NotSwitched."""

import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.procs import NotSwitched, SampleError  # noqa: E402
from harness.results import Results  # noqa: E402
from harness.workload import Workload, run_workload  # noqa: E402


class Ctx:
    profile = {}

    def __init__(self, log_dir):
        self.results = Results(os.path.join(log_dir, "run.log"))


class Scripted(Workload):
    """Measures 1.0 unless `script` names what a (case, variant) raises."""
    name = "scripted"
    variants = ["tcp", "slipstream", "unix"]

    def __init__(self, ctx, script=None, setup_error=None, teardown_error=None):
        super().__init__(ctx)
        self.script, self.setup_error, self.teardown_error = script or {}, setup_error, teardown_error
        self.calls, self.torn_down = [], 0

    def cases(self):
        return ["a", "b"]

    def setup(self):
        if self.setup_error:
            raise self.setup_error

    def measure(self, case, variant, rep):
        self.calls.append((case, variant, rep))
        error = self.script.get((case, variant))
        if error:
            raise error
        return [(case, "m", None, 1.0)]

    def teardown(self):
        self.torn_down += 1
        if self.teardown_error:
            raise self.teardown_error


class RunWorkload(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.ctx = Ctx(self.dir.name)
        self.addCleanup(self.ctx.results._log.close)
        quiet = open(os.devnull, "w")  # Results.log's lines
        self.addCleanup(quiet.close)
        self.addCleanup(setattr, sys, "stderr", sys.stderr)
        sys.stderr = quiet

    def run_it(self, wl, reps=3, warmup=False):
        run_workload(self.ctx, wl, reps, ["tcp", "slipstream", "unix"], warmup)
        return self.ctx.results

    def test_the_order_of_the_variants_rotates_with_each_repetition(self):
        wl = Scripted(self.ctx)
        self.run_it(wl)
        firsts = [v for (case, v, rep) in wl.calls if case == "a"]
        self.assertEqual(firsts, ["tcp", "slipstream", "unix", "slipstream", "unix", "tcp",
                                  "unix", "tcp", "slipstream"])

    def test_not_switched_excludes_the_variant_in_every_case_at_once(self):
        wl = Scripted(self.ctx, {("a", "slipstream"): NotSwitched("switched 0, expected 1")})
        res = self.run_it(wl, warmup=True)
        self.assertEqual([c for c in wl.calls if c[1] == "slipstream"], [("a", "slipstream", -1)],
                         "no sample after the warm-up said it did not switch")
        self.assertFalse([s for s in res.samples if s["variant"] == "slipstream"])
        self.assertEqual(len([s for s in res.samples if s["variant"] == "tcp"]), 6)
        self.assertIn({"workload": "scripted", "case": None, "variant": "slipstream",
                       "reason": "switched 0, expected 1"}, res.exclusions)

    def test_any_error_of_a_sample_is_a_failure_and_two_exclude_the_case(self):
        wl = Scripted(self.ctx, {("b", "unix"): ValueError("unparsable")})
        res = self.run_it(wl)
        self.assertEqual(len([c for c in wl.calls if c[:2] == ("b", "unix")]), 2)
        self.assertEqual(len(res.failures), 2)
        self.assertIn("ValueError: unparsable", res.failures[0]["symptom"])
        self.assertEqual(len([s for s in res.samples if s["variant"] == "unix"]), 3, "case a")

    def test_a_failed_set_up_of_any_kind_excludes_the_workload_and_tears_down(self):
        wl = Scripted(self.ctx, setup_error=RuntimeError("docker import: no space"))
        res = self.run_it(wl)
        self.assertEqual(wl.calls, [])
        self.assertEqual(wl.torn_down, 1)
        self.assertIn("RuntimeError: docker import: no space", res.exclusions[0]["reason"])

    def test_a_failing_teardown_is_noted_and_the_run_goes_on(self):
        wl = Scripted(self.ctx, teardown_error=OSError("rm -f: timeout"))
        res = self.run_it(wl)
        self.assertEqual(len(res.samples), 18)
        self.assertTrue(any("OSError: rm -f: timeout" in n
                            for n in res.workloads["scripted"]["notes"]))

    def test_a_sample_error_keeps_its_command(self):
        wl = Scripted(self.ctx, {("a", "tcp"): SampleError("exit status 1", "ss-sweep client")})
        res = self.run_it(wl, reps=1)
        self.assertEqual(res.failures[0]["command"], "ss-sweep client")


if __name__ == "__main__":
    unittest.main(verbosity=2)

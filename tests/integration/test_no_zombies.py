#!/usr/bin/env python3
"""slipstream-trace leaves no zombie behind for init to reap.

In a container, PID 1 is often the program itself (or a shell script, or a runtime's small init)
and reaps only the children it knows about. Each run of slipstream-trace forks helpers (the
shepherd, the on-demand slipstreamd); whatever of them outlives slipstream-trace is re-parented
to PID 1 and, once it exits, stays a zombie there forever. The test makes such an init: a Python
PID 1 in a new PID namespace that runs slipstream-trace several times (a plain program, and a
switched client/server pair), waits only for its own children, and then lists every zombie in
the namespace. There must be none.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

import fixture_runs as fr
import harness

# PID 1 of the new namespace: never reaps anything but its own direct children.
INIT = r"""
import json, os, subprocess, sys, time
runs = json.loads(sys.argv[1])
codes = [subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                        text=True).returncode for cmd in runs]
time.sleep(0.5)  # a helper that outlived its supervisor has time to exit and become a zombie
zombies = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    state = stat.rsplit(")", 1)[1].split()[0]
    if state == "Z":
        zombies.append(f"{pid} {comm}")
print(json.dumps({"codes": codes, "zombies": zombies}))
"""


class NoZombies(fr.FixtureTest):

    def test_init_that_never_reaps_gets_no_zombie(self):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            self.skipTest("needs root and unshare(1) for a PID namespace")
        port_file = self.path("port")
        peer = harness.program("switch_peer")
        tree = (f"{peer} server --port-file {port_file} --count 1 & "
                f"{peer} client --port-file {port_file}; wait")
        runs = [harness.supervised(["true"]),
                harness.supervised(["sh", "-c", tree]),
                harness.supervised(["sh", "-c", "exit 3"])]
        result = harness.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                              INIT, json.dumps(runs)], timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(report["codes"], [0, 0, 3], result.stderr)
        self.assertEqual(report["zombies"], [], "zombies left for PID 1 to reap")


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""The machine-readable outputs (docs/stats-schema.md) against a real switched connection.

A supervised switch_peer server and client (C, static) run with `--stats=json -o FILE`; while
their connection is live, the kernel shows both fds as one AF_UNIX socketpair
(assert_switched), `slipstreamd --status --json` lists it with those inodes, and
`slipstreamd --status --watch` draws it on a terminal (a pty) and exits 0 on ^C. At exit, the
last line of each -o file is one JSON object whose counts are what the programs did. Every field
the two objects hold is documented in docs/stats-schema.md and in the man page.
"""

import json
import os
import pty
import select
import signal
import subprocess
import time

import fixture_runs as fr
import harness
import switch_support as ss

ECHO_BYTES = 4096
MAN_SOURCES = os.path.join(harness.SOURCE, "packaging", "man")
SCHEMA_DOC = os.path.join(harness.SOURCE, "docs", "stats-schema.md")


def last_json(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1])


def keys(obj, skip=()):
    """Every key of a JSON object, nested objects and arrays of objects included, except the
    keys of the objects named in `skip` (the per-call-kind tables)."""
    found = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.add(k)
            if k not in skip:
                found |= keys(v, skip)
    elif isinstance(obj, list):
        for v in obj:
            found |= keys(v, skip)
    return found


def read_pty(fd, until, timeout=10.0):
    """Reads the pty master until `until(text)` holds; returns what was read."""
    text = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(text):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            text += chunk
    return text


class MachineOutput(fr.FixtureTest, ss.EvidenceMixin):

    def start_pair(self):
        port_file = self.path("port")
        self.server_out, self.client_out = self.path("server.out"), self.path("client.out")
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        server = ss.Gated(self, harness.supervised(
            ss.c_peer("server", "--port-file", port_file, *common),
            extra=["--stats=json", "-o", self.server_out]))
        fr.read_port(port_file)
        client = ss.Gated(self, harness.supervised(ss.after_gate(
            ss.c_peer("client", "--port-file", port_file, *common)),
            extra=["--stats=json", "-o", self.client_out]))
        client.start_program()
        return client, server

    def finish_pair(self, client, server):
        client.go()
        server.go()
        for end in (client, server):
            code, _, err = end.finish()
            self.assertEqual(code, 0, err)

    def test_stats_and_status_json_describe_a_switched_connection(self):
        client, server = self.start_pair()
        c, s = client.ready(), server.ready()
        record = self.assert_switched(c, s)  # kernel evidence and the daemon's record agree

        status = ss.daemon_status()
        self.assertEqual(status["schema"], 1, status)
        self.assertIs(status["running"], True)
        self.assertEqual(status["connections_total"], 1, status)
        self.assertEqual(set(record), {"client", "server", "client_pid", "server_pid",
                                       "client_unix_inode", "server_unix_inode", "client_netns",
                                       "server_netns", "evidence", "since"})
        self.assertEqual(record["evidence"], "netns-4-tuple")
        self.assertLessEqual(abs(record["since"] - time.time()), 60, record)
        self.assertIn(client.pid, [sv["pid"] for sv in status["supervisors"]])
        self.status_keys = keys(status)

        self.check_watch_on_a_terminal(record)
        self.finish_pair(client, server)

        cj, sj = last_json(self.client_out), last_json(self.server_out)
        for j in (cj, sj):
            self.assertEqual(j["schema"], 1, j)
            self.assertEqual(j["calls_total"], sum(j["calls"].values()), j)
            self.assertEqual(j["kernel"] + j["emulated"] + j["interrupted"] + j["unanswered"],
                             j["calls_total"], j)
            self.assertEqual(j["unanswered"], 0, j)
            self.assertEqual(j["connections"]["seen"],
                             j["connections"]["connect"] + j["connections"]["accept"], j)
            self.assertEqual((j["connections"]["relayed"], j["connections"]["left_on_tcp"]),
                             (0, 0), j)
        self.assertEqual(cj["calls"]["connect"], 1, cj)
        self.assertEqual((cj["connections"]["connect"], cj["connections"]["accept"],
                          cj["connections"]["switched"]), (1, 0, 1), cj)
        self.assertEqual(sj["calls"]["listen"], 1, sj)
        self.assertEqual((sj["connections"]["connect"], sj["connections"]["accept"],
                          sj["connections"]["switched"]), (0, 1, 1), sj)
        # Static programs: hybrid mode was on, nothing was served in-process.
        self.assertEqual(sum(cj["preload"]["in_process"].values()), 0, cj)

        # Every field is documented, in docs/ and in the man pages.
        stats_keys = keys(cj, skip=("calls", "in_process", "to_supervisor"))
        with open(SCHEMA_DOC) as f:
            doc = f.read()
        with open(os.path.join(MAN_SOURCES, "slipstream-trace.1.in")) as f:
            trace_man = f.read()
        with open(os.path.join(MAN_SOURCES, "slipstreamd.8.in")) as f:
            daemon_man = f.read()
        for k in sorted(stats_keys):
            self.assertIn(k, doc, f"--stats=json field {k} not in docs/stats-schema.md")
            self.assertIn(k, trace_man, f"--stats=json field {k} not in slipstream-trace.1.in")
        for k in sorted(self.status_keys):
            self.assertIn(k, doc, f"--status --json field {k} not in docs/stats-schema.md")
            self.assertIn(k, daemon_man, f"--status --json field {k} not in slipstreamd.8.in")

    def check_watch_on_a_terminal(self, record):
        """--status --watch on a pty: the screen is cleared and the table redrawn every second
        with the live connection; ^C ends it with status 0."""
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(ss.DAEMON_BIN, [ss.DAEMON_BIN, "--status", "--watch"])
        self.addCleanup(os.close, fd)
        inodes = f"{record['client_unix_inode']}<->{record['server_unix_inode']}".encode()
        try:
            text = read_pty(fd, lambda t: t.count(b"\x1b[H\x1b[2J") >= 2 and t.count(inodes) >= 2)
            self.assertGreaterEqual(text.count(b"\x1b[H\x1b[2J"), 2, text)
            self.assertGreaterEqual(text.count(inodes), 2, text)
            self.assertIn(b"CLIENT ADDRESS", text)
            os.write(fd, b"\x03")  # the terminal turns ^C into SIGINT for the foreground group
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                read_pty(fd, lambda t: False, timeout=0.2)
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
            else:
                self.fail("slipstreamd --status --watch did not end on ^C")
            self.assertTrue(os.WIFEXITED(status), f"ended by signal: {status}")
            self.assertEqual(os.WEXITSTATUS(status), 0)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def test_watch_without_a_terminal_prints_one_object_per_second(self):
        harness.run(harness.supervised(["true"]))  # a daemon runs in this file's directory
        watch = subprocess.Popen([ss.DAEMON_BIN, "--status", "--watch", "--json"],
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        started = time.monotonic()
        first, second = json.loads(watch.stdout.readline()), json.loads(watch.stdout.readline())
        elapsed = time.monotonic() - started
        watch.send_signal(signal.SIGINT)
        self.assertEqual(watch.wait(10), 0)
        for snapshot in (first, second):
            self.assertEqual((snapshot["schema"], snapshot["running"]), (1, True), snapshot)
        self.assertGreaterEqual(elapsed, 0.9, "one snapshot per second")

        text = subprocess.Popen([ss.DAEMON_BIN, "--status", "--watch"], stdout=subprocess.PIPE,
                                text=True)
        self.addCleanup(text.kill)
        # Two snapshots, each a "--- TIME" line and the table (one line, or more while an earlier
        # test's connection is still listed: the sanitized build runs slower).
        lines = [text.stdout.readline()]
        while sum(l.startswith("--- ") for l in lines) < 3:
            lines.append(text.stdout.readline())
            self.assertLess(len(lines), 200, lines)
        text.send_signal(signal.SIGINT)
        self.assertEqual(text.wait(10), 0)
        marks = [i for i, l in enumerate(lines) if l.startswith("--- ")]
        self.assertEqual(marks[0], 0, lines)
        for at in marks[:2]:
            self.assertTrue(lines[at + 1].startswith("slipstreamd pid "), lines)
        self.assertNotIn("\x1b", "".join(lines), "no terminal control off a terminal")

    def test_no_daemon_and_bad_format(self):
        empty = self.path("empty")
        os.mkdir(empty, 0o700)
        env = dict(os.environ, SLIPSTREAM_RUNTIME_DIR=empty)
        out = harness.run([ss.DAEMON_BIN, "--status", "--json"], env=env)
        self.assertEqual((out.returncode, json.loads(out.stdout)),
                         (0, {"schema": 1, "running": False}), out.stderr)
        bad = harness.run([harness.TRACE_BIN, "--stats=xml", "--", "true"])
        self.assertEqual(bad.returncode, 2)
        self.assertIn("FORMAT is text or json", bad.stderr)
        # --stats alone stays the text summary that test_stats.py parses.
        text = harness.run([harness.TRACE_BIN, "--stats", "--", "true"])
        self.assertIn("slipstream-trace: socket calls seen", text.stderr)
        self.assertNotIn('"schema"', text.stderr)


if __name__ == "__main__":
    fr.main()

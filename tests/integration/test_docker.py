#!/usr/bin/env python3
"""slipstream-trace inside real Docker containers (issue #10, must-have 1).

One image (docker import, no registry: docker_support.py) with slipstream-trace, slipstreamd,
their libraries and the static C fixture switch_peer. In each test one container (--network none:
loopback only) runs a supervised switch_peer server and client, each under its own
slipstream-trace, as Docker starts them: root without CAP_SYS_ADMIN, or nobody; with the default
seccomp profile, --cap-add SYS_PTRACE, or the profile Slipstream ships
(contrib/docker/seccomp.json). Each run is compared with a native run of the same pair in the same
container (exit status, checksums, byte counts), and the kernel's view inside the container is
read while the connection is held open: the programs' fds in /proc/net/unix or /proc/net/tcp, the
retained TCP connection, the daemon's record, the trace's "switched to unix" notes.

Docker's default profile refuses pidfd_getfd and process_vm_readv/writev to every container
started without CAP_SYS_PTRACE, root's included (measured: EPERM): there slipstream-trace
supervises but can only observe, and must say that the container's seccomp profile refused it and
what to change.
"""

import json
import re

import docker_support as ds
import fixture_runs as fr
import harness
import switch_support as ss

BIN = ds.BIN
BYTES = "262147"  # not a multiple of any buffer size
SERVER_TRACE = "/tmp/server.trace"
CLIENT_TRACE = "/tmp/client.trace"
# What contrib/docker/seccomp.json adds to Docker's default profile.
ADDED = {"pidfd_getfd", "process_vm_readv", "process_vm_writev"}


def stable(lines):
    """A program's output without its gate lines and without addresses (ports differ by run)."""
    return [re.sub(r" (local|peer)=\S+", "", line) for line in ss.program_lines(lines)]


class Docker(ds.DockerTest):
    FIXTURES = ("switch_peer",)

    # ---- Runs ------------------------------------------------------------------------------

    def container(self, user=None, options=()):
        return ds.Container(self, self.image, user=user, options=options)

    def status(self, box):
        out = box.run([f"{BIN}/slipstreamd", "--status", "--json"], check=False).stdout
        return json.loads(out) if out.strip() else {"running": False}

    def pair(self, box, supervise, expect_switch=False):
        """A switch_peer echo server and client in `box`, both holding their connection open at
        "ready". Returns (server, client, server ready, client ready) with both still held."""
        tag = "sup" if supervise else "native"
        port_file = f"/tmp/port-{tag}"
        server = [f"{BIN}/switch_peer", "server", "--port-file", port_file, "--count", "1",
                  "--mode", "echo", "--hold", "--log"]
        client = [f"{BIN}/switch_peer", "client", "--port-file", port_file, "--mode", "echo",
                  "--bytes", BYTES, "--chunk", "1000", "--seed", "7", "--hold", "--log"]
        if supervise:
            trace = f"{BIN}/slipstream-trace"
            server = [trace, "--trace", "-o", SERVER_TRACE, "--", *server]
            client = [trace, "--trace", "-o", CLIENT_TRACE, "--", *ss.after_gate(client)]
        s = ss.Gated(self, box.exec_argv(server, interactive=True))
        c = ss.Gated(self, box.exec_argv(client, interactive=True))
        if supervise and expect_switch:
            # The client's supervisor must have the daemon's list of supervised listeners before
            # the program connects (see switch_support.Gated.start_program).
            try:
                fr.wait_until(lambda: len(self.status(box).get("supervisors", [])) >= 2, 20,
                              "slipstreamd listing both supervisors in the container")
            except TimeoutError as e:
                self.fail(f"{e}; server stderr {s.err.snapshot()}, client {c.err.snapshot()}")
        if supervise:
            c.go()
        return s, c, s.ready(), c.ready()

    def finish(self, server, client):
        server.go()
        client.go()
        return server.finish(60), client.finish(60)

    def native(self, box):
        server, client, _, _ = self.pair(box, False)
        s, c = self.finish(server, client)
        self.assertEqual((s[0], c[0]), (0, 0), (s, c))
        return s, c

    def traces(self, box):
        return [[m.groupdict() for m in map(harness.TRACE_LINE.match,
                                            box.read(path).splitlines()) if m]
                for path in (SERVER_TRACE, CLIENT_TRACE)]

    def assertSameRun(self, native, supervised):
        for what, n, s in zip(("server", "client"), native, supervised):
            self.assertEqual(s[0], n[0], f"{what} exit status; stderr {s[2]}")
            self.assertEqual(stable(s[1]), stable(n[1]), f"{what} output; stderr {s[2]}")
        summary = ss.summary(supervised[1][1], "client")
        self.assertIn(f"bytes_out={BYTES} bytes_in={BYTES} errors=0", summary)

    # ---- Evidence --------------------------------------------------------------------------

    def assert_switched(self, box, s_ready, c_ready):
        ends = [(c_ready["pid"], c_ready["fd"]), (s_ready["pid"], s_ready["fd"])]
        snap = box.snapshot(ends)
        c_ino, s_ino = (snap.inodes[e] for e in ends)
        for who, ino in (("client", c_ino), ("server", s_ino)):
            self.assertIsNotNone(ino, f"{who} fd is not a socket")
            self.assertIn(ino, snap.unix, f"{who} fd must be AF_UNIX (/proc/net/unix in the box)")
            self.assertNotIn(ino, snap.tcp_inodes(), f"{who} fd must not be TCP")
        self.assertEqual(ss.canonical(c_ready["local"]), ss.canonical(s_ready["peer"]))
        self.assertEqual(ss.canonical(c_ready["peer"]), ss.canonical(s_ready["local"]))
        retained = [e for e in snap.tcp if e[0] == ss.canonical(c_ready["local"])
                    and e[1] == ss.canonical(c_ready["peer"])]
        self.assertEqual(len(retained), 1, f"the supervisor's TCP socket: {snap.tcp}")
        self.assertEqual(retained[0][2], ss.TCP_ESTABLISHED)
        self.assertNotIn(retained[0][3], (c_ino, s_ino))
        records = fr.wait_until(
            lambda: [c for c in self.status(box).get("connections", [])
                     if c["client_unix_inode"] == c_ino], 10,
            f"slipstreamd listing client end {c_ino}")
        self.assertEqual(len(records), 1, records)
        self.assertEqual(records[0]["server_unix_inode"], s_ino)

    def assert_on_tcp(self, box, s_ready, c_ready):
        ends = [(c_ready["pid"], c_ready["fd"]), (s_ready["pid"], s_ready["fd"])]
        snap = box.snapshot(ends)
        for (who, end), ready in zip((("client", ends[0]), ("server", ends[1])),
                                     (c_ready, s_ready)):
            ino = snap.inodes[end]
            self.assertNotIn(ino, snap.unix, f"{who} must stay TCP")
            entries = [e for e in snap.tcp if e[3] == ino]
            self.assertEqual(len(entries), 1, f"{who} fd in /proc/net/tcp: {snap.tcp}")
            self.assertEqual(entries[0][:3], (ss.canonical(ready["local"]),
                                              ss.canonical(ready["peer"]), ss.TCP_ESTABLISHED))

    # ---- Scenarios -------------------------------------------------------------------------

    def switched_in(self, box):
        native = self.native(box)
        server, client, s_ready, c_ready = self.pair(box, True, expect_switch=True)
        self.assert_switched(box, s_ready, c_ready)
        supervised = self.finish(server, client)
        self.assertSameRun(native, supervised)
        s_records, c_records = self.traces(box)
        self.assertEqual(len(ss.trace_switches(c_records, "connect")), 1, c_records)
        accepts = ss.trace_switches(s_records, "accept") + ss.trace_switches(s_records, "accept4")
        self.assertEqual(len(accepts), 1, s_records)
        for what, result in zip(("server", "client"), supervised):
            self.assertFalse([line for line in result[2] if "warn" in line],
                             f"{what}: no warning expected: {result[2]}")

    def observed_in(self, box, refused="pidfd_getfd is unavailable", cap_is_a_fix=True):
        """The profile refuses `refused`: programs run supervised, unswitched, and the message
        names the cause and the fixes (--cap-add SYS_PTRACE only when it would help). Returns the
        client's stderr."""
        native = self.native(box)
        server, client, s_ready, c_ready = self.pair(box, True)
        self.assert_on_tcp(box, s_ready, c_ready)
        supervised = self.finish(server, client)
        for what, result in zip(("server", "client"), supervised):
            text = "\n".join(result[2])
            self.assertNotIn("unsupervised", text, what)
            self.assertIn(f"{refused}, so socket calls are only observed and nothing is "
                          "switched", text, what)
            self.assertIn("EPERM under the seccomp filter", text)
            self.assertIn("the container's seccomp profile refuses it", text)
            self.assertIn("--security-opt seccomp=contrib/docker/seccomp.json", text)
            self.assertEqual("--cap-add SYS_PTRACE" in text, cap_is_a_fix, text)
            self.assertNotIn("lacks", text)
        self.assertSameRun(native, supervised)
        s_records, c_records = self.traces(box)
        # Supervised (the calls were trapped and traced), not switched.
        self.assertEqual(len(fr.calls(c_records, "connect")), 1, c_records)
        self.assertEqual(ss.trace_switches(c_records, "connect"), [])
        self.assertTrue([r for r in s_records if r["call"] == "listen"], s_records)
        return "\n".join(supervised[1][2])

    def test_root_without_cap_sys_admin_is_supervised_and_names_the_profile(self):
        # Before NO_NEW_PRIVS was decided by capability: "no seccomp user notification",
        # unsupervised, no trace at all.
        box = self.container()
        self.assertEqual(box.run(["id", "-u"]).stdout.strip(), "0")
        self.observed_in(box)

    def test_root_with_sys_ptrace_switches(self):
        self.switched_in(self.container(options=["--cap-add", "SYS_PTRACE"]))

    def test_non_root_with_sys_ptrace_switches(self):
        box = self.container(user=ds.NOBODY, options=["--cap-add", "SYS_PTRACE"])
        self.assertEqual(box.run(["id", "-u"]).stdout.strip(), "65534")
        self.switched_in(box)

    def test_non_root_with_the_shipped_profile_switches(self):
        box = self.container(user=ds.NOBODY, options=["--security-opt", f"seccomp={ds.PROFILE}"])
        self.switched_in(box)

    def test_non_root_with_the_default_profile_is_observed_and_names_the_fix(self):
        self.observed_in(self.container(user=ds.NOBODY))

    def test_profile_with_pidfd_getfd_alone_is_observed_not_broken(self):
        # Emulation reads and writes call arguments with process_vm_readv/writev. Before the probe
        # asked for them, such a profile let slipstream-trace emulate and every getsockname failed
        # with EFAULT (measured).
        path = self.write_profile("pidfd-only.json", {"process_vm_readv", "process_vm_writev"})
        box = self.container(user=ds.NOBODY, options=["--security-opt", f"seccomp={path}"])
        self.observed_in(box, refused="process_vm_readv/writev are unavailable")

    def write_profile(self, name, without):
        """The shipped profile without the calls `without`, as a file of this test."""
        with open(ds.PROFILE) as f:
            profile = json.load(f)
        for rule in profile["syscalls"]:
            rule["names"] = [n for n in rule["names"] if n not in without]
        profile["syscalls"] = [rule for rule in profile["syscalls"] if rule["names"]]
        path = self.path(name)
        with open(path, "w") as f:
            json.dump(profile, f)
        return path

    def test_sys_ptrace_with_a_profile_refusing_pidfd_getfd_names_only_the_profile(self):
        # The container has CAP_SYS_PTRACE (bounding set) and its profile still refuses: adding
        # the capability again is no fix, and the message must not offer it.
        path = self.write_profile("default.json", ADDED)
        box = self.container(user=ds.NOBODY, options=["--cap-add", "SYS_PTRACE",
                                                      "--security-opt", f"seccomp={path}"])
        text = self.observed_in(box, cap_is_a_fix=False)
        self.assertIn("although the container has CAP_SYS_PTRACE (in the bounding set), so it is "
                      "not Docker's default profile", text)

    def test_shipped_profile_is_the_daemons_default_plus_three_calls_only(self):
        with open(ds.PROFILE) as f:
            shipped = json.load(f)
        default = self.container().oci_seccomp()
        self.assertIsNotNone(default, "dockerd ran the container without a seccomp profile")
        self.assertEqual(ds.allowed_syscalls(shipped) - ds.allowed_syscalls(default), ADDED)
        self.assertEqual(shipped["defaultAction"], default["defaultAction"])
        # Every conditional rule of the default (clone flags, personality, ENOSYS for clone3) is
        # kept as it is.
        conditional = [r for r in default["syscalls"]
                       if r.get("args") or r.get("action") != "SCMP_ACT_ALLOW"]
        for rule in conditional:
            self.assertIn(rule, shipped["syscalls"])
        # dockerd hands our profile to runc with the three calls allowed and nothing else added.
        applied = self.container(options=["--security-opt", f"seccomp={ds.PROFILE}"]).oci_seccomp()
        self.assertEqual(ds.allowed_syscalls(applied) - ds.allowed_syscalls(default), ADDED)


if __name__ == "__main__":
    fr.main()

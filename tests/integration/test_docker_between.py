#!/usr/bin/env python3
"""Connections between Docker containers are switched to AF_UNIX (issue #10, must-haves 2 and 6).

The recipe of docs/containers.md, "Between containers", run against a real dockerd: one
slipstreamd as root on the host (in the host's network namespace, so with CAP_NET_ADMIN over every
container's namespace), its runtime directory bind-mounted into each container at
/run/slipstream with SLIPSTREAM_RUNTIME_DIR pointing there, and each container allowed
pidfd_getfd and process_vm_readv/writev (--cap-add SYS_PTRACE, or the shipped seccomp profile).
The server and the client run in two containers on Docker's default bridge, each under its own
slipstream-trace; the client connects to the server container's bridge address. The daemon pairs
the two ends by TCP sequence numbers (docs/design.md, "Across network namespaces").

Evidence, read with `docker exec` inside each container: both programs' fds are AF_UNIX sockets
of the client container's namespace (the client's supervisor made the socketpair), neither is in
its container's TCP table, the real TCP connection is held, established, by the supervisor of each
container, getpeername and getsockname show the bridge addresses mirrored, slipstreamd's record
names two namespaces and the evidence, the trace says "paired by TCP sequence numbers". The output
(byte counts, CRC-32 of 256 KiB each way) equals that of a native run between the same containers.

Also: a client whose server container is not supervised stays TCP and says why, so does one
that reaches the server through a port Docker publishes (docker-proxy in between), and two
containers sharing one network namespace (`--network container:ID`, as the containers of a
Kubernetes pod) are paired by their 4-tuple.
"""

import os
import re
import shutil
import tempfile

import docker_support as ds
import fixture_runs as fr
import harness
import switch_support as ss

BIN = ds.BIN
MOUNT = "/run/slipstream"  # where each container sees the host daemon's runtime directory
BYTES = "262147"
PORT = "7000"  # each container has its own namespace: a fixed port cannot collide
SERVER_TRACE = "/tmp/server.trace"
CLIENT_TRACE = "/tmp/client.trace"
PEERS = {"c": "switch_peer", "go": "switchpeer", "c_dyn": "switch_peer_dyn"}


def stable(lines):
    """A program's output without its gate lines and without addresses (ports differ by run)."""
    return [re.sub(r" (local|peer)=\S+", "", line) for line in ss.program_lines(lines)]


class Between(ds.DockerTest):
    """Containers sharing one host daemon; the tests are in the subclasses."""

    IMAGE_PREFIX = "slipstream-between-"
    FIXTURES = tuple(PEERS.values())
    # The host daemon's options and the containers' user; subclasses change them.
    DAEMON_ARGS = ()
    USER = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.skip_reason:
            return
        cls.runtime = cls.runtime_dir()
        # The host's daemon, as root in the host's namespaces: the one the containers share.
        daemon = harness.run([ss.DAEMON_BIN, "--idle-exit", "300", *cls.DAEMON_ARGS],
                             timeout=30, env={**os.environ, "SLIPSTREAM_RUNTIME_DIR": cls.runtime})
        if daemon.returncode != 0:
            raise RuntimeError(f"slipstreamd did not start: {daemon.stderr}")
        cls.addClassCleanup(cls.stop_daemon)

    @classmethod
    def runtime_dir(cls):
        """This file's own runtime directory (harness.RUNTIME_DIR: root's, 0700)."""
        return harness.RUNTIME_DIR

    @classmethod
    def status(cls):
        return ss.daemon_status(prefix=["env", f"SLIPSTREAM_RUNTIME_DIR={cls.runtime}"])

    @classmethod
    def stop_daemon(cls):
        pid = cls.status().get("pid", 0)
        if pid:
            os.kill(pid, 15)

    # ---- Runs ------------------------------------------------------------------------------

    def container(self, grant=("--cap-add", "SYS_PTRACE"), network="bridge", publish=()):
        options = ["-v", f"{self.runtime}:{MOUNT}", "-e", f"SLIPSTREAM_RUNTIME_DIR={MOUNT}",
                   *grant, *[arg for port in publish for arg in ("-p", port)]]
        return ds.Container(self, self.image, user=self.USER, options=options, network=network)

    def supervisors(self):
        return {s["pid"] for s in self.status().get("supervisors", [])}

    def listeners(self):
        return {l["inode"] for l in self.status().get("listeners", [])
                if l["address"].endswith(f":{PORT}")}

    def listening(self, box, server):
        """Waits until something listens on PORT in `box` (a server the daemon may not know)."""
        fr.wait_until(lambda: any(e[2] == ss.TCP_LISTEN and e[0].endswith(f":{PORT}")
                                  for e in box.snapshot([]).tcp), 20,
                      f"the server listening; stderr {server.err.snapshot()}")
        return server

    def server(self, box, lang, supervise):
        cmd = [f"{BIN}/{PEERS[lang]}", "server", "--port", PORT, "--count", "1", "--mode", "echo",
               "--hold", "--log"]
        cmd += ["--bind", "0.0.0.0"] if lang != "go" else ["--family", "v4mapped"]
        if not supervise:
            return self.listening(box, ss.Gated(self, box.exec_argv(cmd, interactive=True)))
        before = self.listeners()
        cmd = [f"{BIN}/slipstream-trace", "--trace", "--stats", "-o", SERVER_TRACE, "--", *cmd]
        server = ss.Gated(self, box.exec_argv(cmd, interactive=True))
        # Registered with the daemon, so that the client's supervisor learns of it.
        fr.wait_until(lambda: self.listeners() - before, 20,
                      f"the server container's listener registered; "
                      f"stderr {server.err.snapshot()}")
        return server

    def client(self, box, lang, host, supervise):
        cmd = [f"{BIN}/{PEERS[lang]}", "client", "--host", host, "--port", PORT, "--mode", "echo",
               "--bytes", BYTES, "--chunk", "1000", "--seed", "7", "--hold", "--log"]
        if not supervise:
            return ss.Gated(self, box.exec_argv(cmd, interactive=True))
        before = self.supervisors()
        cmd = [f"{BIN}/slipstream-trace", "--trace", "--stats", "-o", CLIENT_TRACE, "--",
               *ss.after_gate(cmd)]
        client = ss.Gated(self, box.exec_argv(cmd, interactive=True))
        # The client's supervisor must have the daemon's list of supervised listeners before the
        # program connects (switch_support.Gated.start_program).
        fr.wait_until(lambda: self.supervisors() - before, 20,
                      f"slipstreamd listing the client container's supervisor; "
                      f"stderr {client.err.snapshot()}")
        client.go()
        return client

    def run_pair(self, server_box, client_box, lang, host, supervise_server=True,
                 supervise_client=True):
        """Server and client, both holding their connection at "ready". Returns the two Gated
        processes and their ready lines."""
        server = self.server(server_box, lang, supervise_server)
        client = self.client(client_box, lang, host, supervise_client)
        return server, client, server.ready(), client.ready()

    def finish(self, server, client):
        server.go()
        client.go()
        return server.finish(60), client.finish(60)

    def native(self, server_box, client_box, lang, host):
        server, client, _, _ = self.run_pair(server_box, client_box, lang, host, False, False)
        s, c = self.finish(server, client)
        self.assertEqual((s[0], c[0]), (0, 0), (s, c))
        return s, c

    def assertSameRun(self, native, supervised):
        for what, n, s in zip(("server", "client"), native, supervised):
            self.assertEqual(s[0], n[0], f"{what} exit status; stderr {s[2]}")
            self.assertEqual(stable(s[1]), stable(n[1]), f"{what} output; stderr {s[2]}")
        self.assertIn(f"bytes_out={BYTES} bytes_in={BYTES} errors=0",
                      ss.summary(supervised[1][1], "client"))

    def finish_on_tcp(self, server_box, client_box, server, client, s_ready, c_ready):
        """Checks that both held fds are TCP sockets, lets the pair finish, checks the bytes;
        returns both results."""
        c_end, s_end = (c_ready["pid"], c_ready["fd"]), (s_ready["pid"], s_ready["fd"])
        c_snap, s_snap = client_box.snapshot([c_end]), server_box.snapshot([s_end])
        self.assertIn(c_snap.inodes[c_end], c_snap.tcp_inodes(), "the client must stay TCP")
        self.assertIn(s_snap.inodes[s_end], s_snap.tcp_inodes(), "the server must stay TCP")
        s, c = self.finish(server, client)
        self.assertEqual((s[0], c[0]), (0, 0), (s, c))
        self.assertIn(f"bytes_out={BYTES} bytes_in={BYTES} errors=0", ss.summary(c[1], "client"))
        return s, c

    def records(self, box, path):
        return [m.groupdict() for m in map(harness.TRACE_LINE.match, box.read(path).splitlines())
                if m]

    def copy_out(self, box, path):
        """A file of the container, copied to this test's directory; returns the copy's path."""
        local = self.path(os.path.basename(path))
        with open(local, "w") as f:
            f.write(box.read(path))
        return local

    def stats(self, box, path):
        return ss.read_stats(self.copy_out(box, path))

    # ---- Evidence --------------------------------------------------------------------------

    def assert_switched(self, server_box, client_box, s_ready, c_ready):
        """The two fds are one socketpair of the client container's namespace; the TCP
        connection is held by both supervisors. Returns slipstreamd's record of the pair."""
        c_end, s_end = (c_ready["pid"], c_ready["fd"]), (s_ready["pid"], s_ready["fd"])
        c_snap, s_snap = client_box.snapshot([c_end]), server_box.snapshot([s_end])
        c_ino, s_ino = c_snap.inodes[c_end], s_snap.inodes[s_end]
        self.assertIsNotNone(c_ino, "the client's fd is not a socket")
        self.assertIsNotNone(s_ino, "the server's fd is not a socket")
        for who, ino in (("client", c_ino), ("server", s_ino)):
            self.assertIn(ino, c_snap.unix,
                          f"{who} fd must be AF_UNIX (/proc/net/unix of the client container)")
        self.assertNotIn(c_ino, c_snap.tcp_inodes(), "the client's fd must not be TCP")
        self.assertNotIn(s_ino, s_snap.tcp_inodes(), "the server's fd must not be TCP")
        self.assertEqual(ss.canonical(c_ready["local"]), ss.canonical(s_ready["peer"]))
        self.assertEqual(ss.canonical(c_ready["peer"]), ss.canonical(s_ready["local"]))
        # The TCP connection lives on, established, held in each container by its supervisor
        # (slipstream-trace) and by no other process there.
        for who, snap, ready in (("client", c_snap, c_ready), ("server", s_snap, s_ready)):
            held = [e for e in snap.tcp if e[0] == ss.canonical(ready["local"])
                    and e[1] == ss.canonical(ready["peer"])]
            self.assertEqual(len(held), 1, f"the {who} side's TCP socket: {snap.tcp}")
            self.assertEqual(held[0][2], ss.TCP_ESTABLISHED)
            self.assertEqual(snap.holders.get(held[0][3]), {"slipstream-trace"},
                             f"the {who} side's TCP socket {held[0][3]} held by: {snap.holders}")
        record = ss.status_connection(c_ino, self.status)
        self.assertEqual(record["server_unix_inode"], s_ino, record)
        self.assertEqual(record["evidence"], "tcp-sequence-numbers", record)
        self.assertNotEqual(record["client_netns"], record["server_netns"], record)
        return record

    def assert_traced_switch(self, server_box, client_box, record):
        c_records = self.records(client_box, CLIENT_TRACE)
        switched = ss.trace_switches(c_records, "connect")
        self.assertEqual(len(switched), 1, c_records)
        self.assertIn("paired by TCP sequence numbers", switched[0]["note"])
        self.assertIn(str(record["server_netns"]), switched[0]["note"])
        self.assertEqual(len(ss.accept_switches(self.records(server_box, SERVER_TRACE))), 1)
        for box, path in ((client_box, CLIENT_TRACE), (server_box, SERVER_TRACE)):
            stats = self.stats(box, path)
            self.assertEqual((stats["switched"], stats["relayed"]), (1, 0), (path, stats))

    # ---- Scenarios -------------------------------------------------------------------------

    def switched_between(self, lang, server_grant=("--cap-add", "SYS_PTRACE"),
                         client_grant=("--cap-add", "SYS_PTRACE")):
        server_box, client_box = self.container(server_grant), self.container(client_grant)
        host = server_box.address()
        self.assertTrue(host and host != client_box.address(), (host, client_box.address()))
        native = self.native(server_box, client_box, lang, host)
        server, client, s_ready, c_ready = self.run_pair(server_box, client_box, lang, host)
        self.assertEqual(c_ready["peer"].rsplit(":", 1)[0].removeprefix("::ffff:"), host)
        record = self.assert_switched(server_box, client_box, s_ready, c_ready)
        # Hybrid mode for dynamically linked programs, but for another user's supervisors under
        # a system-wide daemon: they cannot write its listener table's accept gates, and run
        # without the library (docs/design.md, "Every user's sessions").
        hybrid = lang in ss.DYNAMIC_PEERS and self.USER is None
        for box, ready in ((client_box, c_ready), (server_box, s_ready)):
            maps = box.read(f"/proc/{ready['pid']}/maps")
            self.assertEqual("libslipstream-preload.so" in maps, hybrid,
                             f"{lang} programs as {self.USER or 'root'}: hybrid mode {hybrid}")
        supervised = self.finish(server, client)
        self.assertSameRun(native, supervised)
        self.assert_traced_switch(server_box, client_box, record)
        for what, result in zip(("server", "client"), supervised):
            self.assertFalse([line for line in result[2] if "warn" in line],
                             f"{what}: no warning expected: {result[2]}")
        if hybrid:  # the library served calls in both programs
            for box, path in ((client_box, CLIENT_TRACE), (server_box, SERVER_TRACE)):
                counts = ss.preload_counts(self.copy_out(box, path))
                self.assertTrue(counts and sum(counts.values()) > 0, (path, counts))



class BetweenContainers(Between):
    """Root in the containers (Docker's default user), root's own daemon on the host."""

    def test_static_c_containers_on_the_default_bridge_switch(self):
        self.switched_between("c")

    def test_go_containers_on_the_default_bridge_switch(self):
        self.switched_between("go")

    def test_hybrid_mode_containers_with_the_shipped_profile_switch(self):
        # Dynamically linked: libslipstream-preload.so is loaded in both containers. The client
        # container is given the shipped profile instead of the capability.
        profile = ("--security-opt", f"seccomp={ds.PROFILE}")
        self.switched_between("c_dyn", client_grant=profile)

    def test_unsupervised_server_container_stays_tcp_and_says_why(self):
        server_box, client_box = self.container(), self.container()
        host = server_box.address()
        server, client, s_ready, c_ready = self.run_pair(server_box, client_box, "c", host,
                                                         supervise_server=False)
        s, c = self.finish_on_tcp(server_box, client_box, server, client, s_ready, c_ready)
        connects = fr.calls(self.records(client_box, CLIENT_TRACE), "connect")
        self.assertEqual(len(connects), 1, connects)
        self.assertIn("left on TCP", connects[0]["note"], connects)
        stats = self.stats(client_box, CLIENT_TRACE)
        self.assertEqual((stats["switched"], stats["relayed"]), (0, 0), stats)

    def test_published_port_through_docker_proxy_stays_tcp(self):
        # `-p PORT:PORT`: Docker publishes the server's port on the host, where docker-proxy (an
        # unsupervised process of the host) listens and opens a connection of its own to the
        # server. A client container reaching it through the bridge's gateway (Docker's nat rules
        # leave traffic from docker0 to the proxy) makes two TCP connections, neither between two
        # supervised programs: both stay TCP, as they would without Slipstream, bytes intact. The
        # same port on both sides: the supervised listener (0.0.0.0:PORT in the server's
        # namespace) matches by port, and only its namespace's addresses tell it apart.
        server_box = self.container(publish=[f"{PORT}:{PORT}"])
        client_box = self.container()
        gateway = ds.docker("inspect", "-f", "{{.NetworkSettings.Gateway}}",
                            client_box.id).stdout.strip()
        server, client, s_ready, c_ready = self.run_pair(server_box, client_box, "c", gateway)
        self.assertEqual(c_ready["peer"].removeprefix("::ffff:"), f"{gateway}:{PORT}")
        self.assertEqual(s_ready["peer"].rsplit(":", 1)[0].removeprefix("::ffff:"), gateway,
                         "the server's peer is docker-proxy, on the host side of the bridge")
        self.finish_on_tcp(server_box, client_box, server, client, s_ready, c_ready)
        connects = fr.calls(self.records(client_box, CLIENT_TRACE), "connect")
        self.assertEqual(len(connects), 1, connects)
        self.assertIn("left on TCP: not local, and no supervised listener in another network "
                      "namespace has that address and port", connects[0]["note"], connects)
        for box, path in ((client_box, CLIENT_TRACE), (server_box, SERVER_TRACE)):
            stats = self.stats(box, path)
            self.assertEqual((stats["switched"], stats["relayed"]), (0, 0), (path, stats))

    def test_containers_sharing_a_namespace_as_in_a_pod_switch(self):
        # Kubernetes runs the containers of a pod in one network namespace; Docker does the same
        # with --network container:ID. The client connects to 127.0.0.1.
        server_box = self.container()
        client_box = self.container(network=f"container:{server_box.id}")
        native = self.native(server_box, client_box, "c", "127.0.0.1")
        server, client, s_ready, c_ready = self.run_pair(server_box, client_box, "c",
                                                         "127.0.0.1")
        c_end, s_end = (c_ready["pid"], c_ready["fd"]), (s_ready["pid"], s_ready["fd"])
        c_snap, s_snap = client_box.snapshot([c_end]), server_box.snapshot([s_end])
        c_ino, s_ino = c_snap.inodes[c_end], s_snap.inodes[s_end]
        self.assertTrue({c_ino, s_ino} <= c_snap.unix, "both fds must be AF_UNIX")
        self.assertFalse({c_ino, s_ino} & c_snap.tcp_inodes(), "neither fd may be TCP")
        record = ss.status_connection(c_ino, self.status)
        self.assertEqual(record["server_unix_inode"], s_ino, record)
        # One namespace, but not the daemon's: paired by sequence numbers (within the daemon's
        # own namespace the 4-tuple would do).
        self.assertEqual(record["evidence"], "tcp-sequence-numbers", record)
        self.assertEqual(record["client_netns"], record["server_netns"], record)
        self.assertSameRun(native, self.finish(server, client))


class NonRootBetweenContainers(Between):
    """The containers run as nobody (--user 65534); the host's root daemon serves every user
    (--all-users) from a directory of root's that others may read but not write (0755)."""

    DAEMON_ARGS = ("--all-users",)
    USER = ds.NOBODY

    @classmethod
    def runtime_dir(cls):
        path = tempfile.mkdtemp(prefix="slipstream-all-users-")
        os.chmod(path, 0o755)
        cls.addClassCleanup(shutil.rmtree, path, True)
        return path

    def test_non_root_containers_with_an_all_users_daemon_switch(self):
        self.switched_between("c")

    def test_non_root_dynamic_programs_with_an_all_users_daemon_switch(self):
        # Dynamically linked, but nobody's supervisors run them without the library.
        self.switched_between("c_dyn")


class NonRootWithoutAllUsers(Between):
    """The containers run as nobody; the host's root daemon serves root only (its directory is
    root's 0700, as a daemon without --all-users makes it): the supervisors cannot reach it, say
    so naming --all-users, and the programs run on TCP as without Slipstream."""

    USER = ds.NOBODY

    def test_non_root_containers_without_all_users_stay_tcp_and_name_the_flag(self):
        server_box, client_box = self.container(), self.container()
        host = server_box.address()
        trace = [f"{BIN}/slipstream-trace", "--"]
        server = self.listening(server_box, ss.Gated(self, server_box.exec_argv(
            [*trace, f"{BIN}/switch_peer", "server", "--port", PORT, "--bind", "0.0.0.0",
             "--count", "1", "--mode", "echo", "--hold", "--log"], interactive=True)))
        client = ss.Gated(self, client_box.exec_argv(
            [*trace, f"{BIN}/switch_peer", "client", "--host", host, "--port", PORT, "--mode",
             "echo", "--bytes", BYTES, "--chunk", "1000", "--seed", "7", "--hold", "--log"],
            interactive=True))
        s_ready, c_ready = server.ready(), client.ready()
        s, c = self.finish_on_tcp(server_box, client_box, server, client, s_ready, c_ready)
        for what, result in (("server", s), ("client", c)):
            said = [line for line in result[2] if "slipstreamd" in line]
            self.assertEqual(len(said), 1, f"{what}: one line names the cause: {result[2]}")
            self.assertIn(f"no slipstreamd answers in {MOUNT}", said[0])
            self.assertIn("EACCES", said[0])
            self.assertIn("start `slipstreamd --all-users` there as root", said[0])


if __name__ == "__main__":
    fr.main()

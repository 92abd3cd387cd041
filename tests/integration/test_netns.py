#!/usr/bin/env python3
"""Connections between two network namespaces of one host are switched to AF_UNIX, exactly.

Each test builds its own namespaces joined by a veth pair per namespace and a Linux bridge
(`ip netns`, root only; the whole file skips otherwise) and removes them afterwards. While the
bridge exists an iptables rule accepts its bridged frames (dockerd, when it runs, sets the FORWARD
policy to DROP and loads br_netfilter). Every program runs under `ip netns exec NS
slipstream-trace ...` with one runtime directory shared by all, and one slipstreamd, started in the
root namespace, pairs them by TCP sequence numbers (docs/design.md, "Across network namespaces").

Evidence, read from the kernel of the namespace it lives in (/proc/PID/net/...): both programs'
fds are AF_UNIX sockets connected to each other (ss in the client's namespace, where the
socketpair was made), neither is in its namespace's TCP table, the real TCP connection lives on in
the supervisors, getpeername shows the bridge addresses mirrored, and `slipstreamd --status`
names the two namespaces (SO_NETNS_COOKIE) and the evidence. Bytes are checked end to end (CRC-32
of 1 MiB each way). An unsupervised server in the other namespace stays TCP with no relay; two
pairs of namespaces with the same addresses, running the same conversation at the same time,
each get their own server's bytes (a mispair would show as a CRC mismatch).
"""

import os
import shutil
import signal
import subprocess
import time

import fixture_runs as fr
import harness
import switch_support as ss
import user_runs as ur

ECHO_BYTES = 1 << 20
RUNTIME = "SLIPSTREAM_RUNTIME_DIR"
SUBNET = "10.77.0"
SUBNET6 = "fd77::"


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check)


def usable():
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, bridge)"
    for tool in ("ip", "iptables", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class Topology:
    """Namespaces on one bridge: names[i] gets SUBNET.(i+1)/24 on its eth0."""

    made = 0  # a fresh name for each: a deleted namespace's veth may linger for a moment

    def __init__(self, test, tag, count=2):
        Topology.made += 1
        suffix = f"{os.getpid() % 100000}{tag}{Topology.made}"
        self.bridge = f"slb{suffix}"[:15]
        self.names = [f"sls-{suffix}-{i}" for i in range(count)]
        self.addrs = [f"{SUBNET}.{i + 1}" for i in range(count)]
        self.rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self.hosts = [f"slv{suffix}-{i}"[:15] for i in range(count)]
        test.addCleanup(self.remove)
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "link", "set", self.bridge, "up")
        sh("iptables", "-I", *self.rule)
        for ns, addr, host in zip(self.names, self.addrs, self.hosts):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{SUBNET6}{addr.rsplit('.', 1)[1]}/64", "dev",
               "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # The bridge forwards once its ports are up; wait until the namespaces reach each other.
        fr.wait_until(lambda: sh("ip", "netns", "exec", self.names[0], "ping", "-c1", "-W1",
                                 self.addrs[-1], check=False).returncode == 0
                      if shutil.which("ping") else True, 20, "the bridge forwarding")

    def run_in(self, index, cmd):
        return ["ip", "netns", "exec", self.names[index], *cmd]

    def remove(self):
        # The host ends first: a namespace lives on (with its end) while a socket of it is open.
        for host in self.hosts:
            sh("ip", "link", "del", host, check=False)
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        while sh("iptables", "-D", *self.rule, check=False).returncode == 0:
            pass


def proc_unix_inodes(pid):
    """AF_UNIX inodes of the network namespace of `pid`."""
    return harness.unix_inodes(f"/proc/{pid}/net/unix")


def proc_tcp(pid):
    """(local, remote, state, inode) of every TCP socket in the network namespace of `pid`."""
    out = []
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{name}") as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                out.append((ss._hex_addr(fields[1]), ss._hex_addr(fields[2]),
                            int(fields[3], 16), int(fields[9])))
    return out


def unix_peers_in(ns):
    return ss.parse_unix_peers(sh("ip", "netns", "exec", ns, "ss", "-xnH").stdout)


class AcrossNamespaces(fr.FixtureTest):

    @classmethod
    def setUpClass(cls):
        if usable():
            return
        # One daemon for the whole file, in the root namespace, as a system-wide one would run.
        daemon = subprocess.run([ss.DAEMON_BIN, "--idle-exit", "600"], capture_output=True,
                                text=True, timeout=30)
        if daemon.returncode != 0:
            raise RuntimeError(f"slipstreamd did not start: {daemon.stderr}")

    def setUp(self):
        why = usable()
        if why:
            self.skipTest(why)
        super().setUp()

    def traced(self, topo, index, cmd, name, gate=False):
        out = self.path(name)
        inner = ss.after_gate(cmd) if gate else cmd
        return ss.Gated(self, topo.run_in(index, harness.supervised(inner, trace_file=out,
                                                                    stats=True))), out

    def wait_listener(self, port):
        fr.wait_until(lambda: any(l["address"].endswith(f":{port}")
                                  for l in ss.daemon_status().get("listeners", [])),
                      20, f"a supervised listener on port {port}")

    def assert_switched_across(self, topo, client, server):
        c_ino = harness.fd_socket_inode(client["pid"], client["fd"])
        s_ino = harness.fd_socket_inode(server["pid"], server["fd"])
        self.assertIsNotNone(c_ino)
        self.assertIsNotNone(s_ino)
        # The socketpair was made by the client's supervisor: both ends belong to the client's
        # namespace, whichever process holds them.
        unix = proc_unix_inodes(client["pid"])
        self.assertIn(c_ino, unix, "the client's fd must be an AF_UNIX socket")
        self.assertIn(s_ino, unix, "the server's fd must be an AF_UNIX socket")
        self.assertEqual(unix_peers_in(topo.names[0]).get(c_ino), s_ino,
                         "the two fds must be one socketpair")
        c_tcp, s_tcp = proc_tcp(client["pid"]), proc_tcp(server["pid"])
        self.assertNotIn(c_ino, [e[3] for e in c_tcp])
        self.assertNotIn(s_ino, [e[3] for e in s_tcp])
        # getpeername/getsockname: the bridge addresses, mirrored.
        self.assertEqual(client["local"].rsplit(":", 1)[0].strip("[]"), topo.addrs[0])
        self.assertEqual(client["peer"].rsplit(":", 1)[0].strip("[]"), topo.addrs[1])
        self.assertEqual(ss.canonical(client["local"]), ss.canonical(server["peer"]))
        self.assertEqual(ss.canonical(client["peer"]), ss.canonical(server["local"]))
        # The TCP connection lives on, established, in the supervisors of both namespaces.
        for table, end in ((c_tcp, client), (s_tcp, server)):
            held = [e for e in table if e[0] == ss.canonical(end["local"])
                    and e[1] == ss.canonical(end["peer"])]
            self.assertEqual(len(held), 1, held)
            self.assertEqual(held[0][2], ss.TCP_ESTABLISHED)
            self.assertNotIn(held[0][3], fr.socket_inodes(end["pid"]))
        self.retained = {role: [e[3] for e in table if e[0] == ss.canonical(end["local"])
                                and e[1] == ss.canonical(end["peer"])][0]
                         for role, table, end in (("client", c_tcp, client),
                                                  ("server", s_tcp, server))}
        record = ss.status_connection(c_ino)
        self.assertEqual(record["server_unix_inode"], s_ino, record)
        self.assertEqual(record["evidence"], "tcp-sequence-numbers", record)
        self.assertNotEqual(record["client_netns"], record["server_netns"], record)
        self.assertNotEqual(record["client_netns"], 0, record)
        return record

    def echo_pair(self, lang, bind=None, ipv6=False):
        peer = ss.PEERS[lang]
        topo = Topology(self, lang[0])
        if ipv6:
            topo.addrs = [f"{SUBNET6}{a.rsplit('.', 1)[1]}" for a in topo.addrs]
        port = ss.free_port()
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        # Listening on every address: C on 0.0.0.0 (or `bind`), Go and Python on :: (dual stack).
        where = ["--bind", bind or "0.0.0.0"] if lang == "c" else ["--family", "v4mapped"]
        if ipv6:
            where = ["--family", "ipv6", "--bind", bind or "::"]
        server_args = ["--port", str(port), *where]
        server, server_out = self.traced(topo, 1, peer("server", *server_args, *common),
                                         "server.out")
        self.wait_listener(port)
        client, client_out = self.traced(
            topo, 0, peer("client", "--host", topo.addrs[1], "--port", str(port), *common),
            "client.out", gate=True)
        client.start_program()
        c, s = client.ready(), server.ready()
        record = self.assert_switched_across(topo, c, s)
        # The human-readable status names both namespaces and the evidence.
        text = sh(ss.DAEMON_BIN, "--status").stdout
        row = [line for line in text.splitlines()
               if line.split()[:1] == [str(record["client_pid"])]]
        self.assertEqual(len(row), 1, text)
        self.assertIn(f"{record['client_netns']}->{record['server_netns']}", row[0])
        self.assertTrue(row[0].endswith("tcp seq"), row[0])
        # Both namespaces are listed, with the addresses their supervisors reported.
        spaces = {n["netns"]: n for n in ss.daemon_status()["namespaces"]}
        self.assertIn(topo.addrs[0], spaces[record["client_netns"]]["addresses"])
        self.assertIn(topo.addrs[1], spaces[record["server_netns"]]["addresses"])
        # Past the supervisors' sweeps (1 s) and the daemon's (2 s): the server's supervisor
        # still keeps the retained TCP socket (it answers getpeername & co. from it), although
        # its sock_diag cannot see the end, which lives in the client's namespace.
        time.sleep(2.5)
        self.assertIn(self.retained["server"], fr.socket_inodes(server.pid))
        self.assertIn(self.retained["client"], fr.socket_inodes(client.pid))
        self.assertTrue(ss.status_connection(harness.fd_socket_inode(c["pid"], c["fd"])))
        client.go()
        server.go()
        (ccode, cout, cerr), (scode, sout, serr) = client.finish(), server.finish()
        # Once both ends are closed the daemon forgets the pair and the namespaces.
        fr.wait_until(lambda: not ss.daemon_status()["connections"] and not any(
            n["netns"] in (record["client_netns"], record["server_netns"])
            for n in ss.daemon_status()["namespaces"]), 10, "the pair forgotten")
        n = ECHO_BYTES
        self.assertEqual((ccode, ss.program_lines(cout)),
                         (0, [f"client: mode=echo connections=1 bytes_out={n} bytes_in={n} "
                              "errors=0"]), cerr)
        self.assertEqual((scode, ss.program_lines(sout)),
                         (0, [f"server: mode=echo connections=1 bytes_in={n} bytes_out={n} "
                              "errors=0"]), serr)
        records = harness.read_trace(client_out)
        switched = ss.trace_switches(records, "connect")
        self.assertEqual(len(switched), 1, records)
        self.assertIn("paired by TCP sequence numbers", switched[0]["note"])
        self.assertIn(str(record["server_netns"]), switched[0]["note"])
        # A trapped accept, or (a preloaded server) the late claim after an in-process accept.
        self.assertEqual(len(ss.accept_switches(harness.read_trace(server_out))), 1)
        for path in (client_out, server_out):
            stats = ss.read_stats(path)
            self.assertEqual((stats["switched"], stats["relayed"]), (1, 0), (path, stats))

    def test_c_pair(self):
        self.echo_pair("c")

    def test_c_pair_specific_address(self):
        self.echo_pair("c", bind=f"{SUBNET}.2")

    def test_c_pair_ipv6(self):
        self.echo_pair("c", ipv6=True)

    def test_go_pair(self):
        self.echo_pair("go")

    def test_python_pair(self):
        self.echo_pair("py")

    def test_daemon_started_in_the_servers_namespace(self):
        """No daemon of the file's: the server's supervisor starts one on demand, in its own
        namespace; the client's, in the other namespace, finds it through the shared runtime
        directory, and the pair is still made by sequence numbers."""
        topo = Topology(self, "d")
        env = dict(os.environ, SLIPSTREAM_RUNTIME_DIR=self.path("runtime"))
        def status():
            return ss.daemon_status(prefix=["env", f"SLIPSTREAM_RUNTIME_DIR={env[RUNTIME]}"])

        self.addCleanup(self.stop_daemon, status)
        port = ss.free_port()
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        server_out, client_out = self.path("server.out"), self.path("client.out")
        server = ss.Gated(self, topo.run_in(1, harness.supervised(
            ss.c_peer("server", "--port", str(port), "--bind", "0.0.0.0", *common),
            trace_file=server_out, stats=True)), env=env)
        fr.wait_until(lambda: any(l["address"].endswith(f":{port}")
                                  for l in status().get("listeners", [])), 20, "the listener")
        client = ss.Gated(self, topo.run_in(0, harness.supervised(ss.after_gate(
            ss.c_peer("client", "--host", topo.addrs[1], "--port", str(port), *common)),
            trace_file=client_out, stats=True)), env=env)
        client.start_program(status=status)
        c, s = client.ready(), server.ready()
        daemon = status()
        self.assertEqual(os.stat(f"/proc/{daemon['pid']}/ns/net").st_ino,
                         os.stat(f"/run/netns/{topo.names[1]}").st_ino,
                         "the daemon runs in the server's namespace")
        c_ino = harness.fd_socket_inode(c["pid"], c["fd"])
        record = ss.status_connection(c_ino, status)
        self.assertEqual(record["evidence"], "tcp-sequence-numbers", record)
        self.assertEqual(record["server_netns"], daemon["netns"], record)
        self.assertNotEqual(record["client_netns"], daemon["netns"], record)
        client.go()
        server.go()
        (ccode, cout, cerr), (scode, _, serr) = client.finish(), server.finish()
        self.assertEqual((ccode, scode), (0, 0), (cerr, serr))
        self.assertIn(f"client: mode=echo connections=1 bytes_out={ECHO_BYTES} "
                      f"bytes_in={ECHO_BYTES} errors=0", cout)
        self.assertEqual(ss.read_stats(client_out)["switched"], 1)

    def stop_daemon(self, status):
        try:
            pid = status().get("pid", 0)
            if pid:
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def test_unsupervised_server_stays_tcp(self):
        topo = Topology(self, "u")
        port = ss.free_port()
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        server = ss.Gated(self, topo.run_in(1, ss.c_peer("server", "--port", str(port), "--bind",
                                                         "0.0.0.0", *common)))
        fr.wait_until(lambda: sh("ip", "netns", "exec", topo.names[1], "ss", "-ltnH",
                                 f"sport = :{port}").stdout.strip() != "", 20, "the listener")
        client, client_out = self.traced(
            topo, 0, ss.c_peer("client", "--host", topo.addrs[1], "--port", str(port), *common),
            "client.out", gate=True)
        client.start_program()
        c, s = client.ready(), server.ready()
        c_ino = harness.fd_socket_inode(c["pid"], c["fd"])
        self.assertNotIn(c_ino, proc_unix_inodes(c["pid"]))
        entries = [e for e in proc_tcp(c["pid"]) if e[3] == c_ino]
        self.assertEqual(len(entries), 1)
        self.assertEqual(entries[0][:3], (ss.canonical(c["local"]), ss.canonical(c["peer"]),
                                          ss.TCP_ESTABLISHED))
        client.go()
        server.go()
        (ccode, cout, cerr), (scode, _, serr) = client.finish(), server.finish()
        self.assertEqual((ccode, scode), (0, 0), (cerr, serr))
        stats = ss.read_stats(client_out)
        self.assertEqual((stats["switched"], stats["relayed"], stats["tcp"]), (0, 0, 1), stats)
        connects = fr.calls(harness.read_trace(client_out), "connect")
        self.assertEqual(len(connects), 1, connects)
        self.assertIn("no supervised listener in another network namespace",
                      connects[0]["note"] or "")

    def test_wrong_guess_is_relayed(self):
        """A supervised listener on 10.77.0.2:P in one pair of namespaces makes a client of the
        other pair try the switch, but its connection reaches an unsupervised server with the same
        address there: the daemon finds the server side accepted and unclaimed, and the client's
        supervisor relays. Bytes are exact, and nothing pairs with the supervised server."""
        first, second = Topology(self, "w"), Topology(self, "v")
        port = ss.free_port()
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        decoy, _ = self.traced(second, 1, ss.c_peer(
            "server", "--port", str(port), "--bind", "0.0.0.0", *common), "decoy.out")
        self.wait_listener(port)
        server = ss.Gated(self, first.run_in(1, ss.c_peer("server", "--port", str(port), "--bind",
                                                          "0.0.0.0", *common)))
        fr.wait_until(lambda: sh("ip", "netns", "exec", first.names[1], "ss", "-ltnH",
                                 f"sport = :{port}").stdout.strip() != "", 20, "the listener")
        client, client_out = self.traced(
            first, 0, ss.c_peer("client", "--host", first.addrs[1], "--port", str(port), *common),
            "client.out", gate=True)
        client.start_program()
        c, s = client.ready(), server.ready()
        # The client's fd is the AF_UNIX end; the server's is TCP; the two are joined by a relay.
        self.assertIn(harness.fd_socket_inode(c["pid"], c["fd"]), proc_unix_inodes(c["pid"]))
        self.assertIn(harness.fd_socket_inode(s["pid"], s["fd"]),
                      [e[3] for e in proc_tcp(s["pid"])])
        client.go()
        server.go()
        (ccode, cout, cerr), (scode, sout, serr) = client.finish(), server.finish()
        n = ECHO_BYTES
        self.assertEqual((ccode, ss.program_lines(cout)),
                         (0, [f"client: mode=echo connections=1 bytes_out={n} bytes_in={n} "
                              "errors=0"]), cerr)
        self.assertEqual((scode, ss.program_lines(sout)),
                         (0, [f"server: mode=echo connections=1 bytes_in={n} bytes_out={n} "
                              "errors=0"]), serr)
        stats = ss.read_stats(client_out)
        self.assertEqual((stats["switched"], stats["relayed"]), (1, 1), stats)
        # The supervised server in the other pair never got a connection.
        self.assertEqual([line for line in decoy.out.snapshot() if line.startswith("ready")], [])

    def test_same_addresses_never_mispair(self):
        """Two pairs of namespaces with the same addresses, the same port and the same
        conversation at the same time: each client must get its own server's stream."""
        first, second = Topology(self, "x"), Topology(self, "y")
        self.assertEqual(first.addrs, second.addrs)
        port, count, size = ss.free_port(), 20, 65536
        servers, clients = [], []
        for i, topo in enumerate((first, second)):
            seed = str(1000 + 5000 * i)
            servers.append(self.traced(topo, 1, ss.c_peer(
                "server", "--port", str(port), "--bind", "0.0.0.0", "--mode", "source", "--bytes", str(size),
                "--seed", seed, "--count", str(count)), f"server{i}.out"))
        self.wait_listener(port)
        fr.wait_until(lambda: sum(l["address"].endswith(f":{port}")
                                  for l in ss.daemon_status()["listeners"]) == 2, 20,
                      "both listeners registered")
        for i, topo in enumerate((first, second)):
            seed = str(1000 + 5000 * i)
            clients.append(self.traced(topo, 0, ss.c_peer(
                "client", "--host", topo.addrs[1], "--port", str(port), "--mode", "source",
                "--bytes", str(size), "--seed", seed, "--count", str(count)),
                f"client{i}.out", gate=True))
        for client, _ in clients:
            fr.wait_until(lambda: client.pid in ss.supervisor_pids(), 20, "the supervisor")
        for client, _ in clients:
            client.go()  # as close together as two writes
        for i, (client, out) in enumerate(clients):
            code, lines, err = client.finish()
            self.assertEqual((code, ss.program_lines(lines)),
                             (0, [f"client: mode=source connections={count} bytes_out=0 "
                                  f"bytes_in={size * count} errors=0"]), err)
            stats = ss.read_stats(out)
            self.assertEqual((stats["switched"], stats["relayed"]), (count, 0), stats)
        for server, _ in servers:
            code, _, err = server.finish()
            self.assertEqual(code, 0, err)


class UserNamespace(ur.UserRunsMixin, fr.FixtureTest):
    """As an unprivileged user (nobody): the user's own slipstreamd, in the initial namespaces,
    pairs a connection inside a network namespace that user created with `unshare -Urn`. Its
    CAP_NET_ADMIN there comes from owning the user namespace, not from root."""

    USER = "nobody"

    def setUp(self):
        super().setUp()
        self.setup_user({"slipstream-trace": harness.TRACE_BIN, "slipstreamd": ss.DAEMON_BIN,
                         "switch_peer": harness.program("switch_peer")},
                        tools=("runuser", "unshare", "ip"))
        if sh("runuser", "-u", self.USER, "--", "unshare", "-Urn", "true",
              check=False).returncode != 0:
            self.skipTest("unprivileged user namespaces are disabled")

    def status(self):
        return ss.daemon_status(prefix=self.as_user([]),
                                daemon=os.path.join(self.bin, "slipstreamd"))

    def test_pair_in_user_owned_namespace(self):
        daemon = sh(*self.as_user([os.path.join(self.bin, "slipstreamd"), "--idle-exit", "60"]))
        self.assertEqual(daemon.returncode, 0, daemon.stderr)
        trace = os.path.join(self.bin, "slipstream-trace")
        peer = os.path.join(self.bin, "switch_peer")
        port_file = os.path.join(self.work, "port")
        common = "--mode echo --bytes 1048576 --hold"
        script = (f"ip link set lo up && {trace} -- {peer} server --port-file {port_file} "
                  f"{common} & {trace} -- sh -c 'read _; exec \"$@\"' sh {peer} client "
                  f"--port-file {port_file} {common}; wait")
        tree = ss.Gated(self, self.as_user(["unshare", "-Urn", "sh", "-c", script]))
        # The client starts once both supervisors are known and the listener is registered.
        fr.wait_until(lambda: len(self.status().get("supervisors", [])) >= 2 and
                      self.status().get("listeners"), 20, "both supervisors and the listener")
        tree.go()
        first, second = tree.ready(), tree.ready()
        ends = {first["role"]: first, second["role"]: second}
        client, server = ends["client"], ends["server"]
        c_ino = harness.fd_socket_inode(client["pid"], client["fd"])
        s_ino = harness.fd_socket_inode(server["pid"], server["fd"])
        unix = proc_unix_inodes(client["pid"])
        self.assertIn(c_ino, unix)
        self.assertIn(s_ino, unix)
        self.assertNotIn(c_ino, [e[3] for e in proc_tcp(client["pid"])])
        status = self.status()
        self.assertEqual(os.stat(f"/proc/{status['pid']}").st_uid, self.user.pw_uid)
        record = ss.status_connection(c_ino, self.status)
        self.assertEqual(record["server_unix_inode"], s_ino, record)
        self.assertEqual(record["evidence"], "tcp-sequence-numbers", record)
        self.assertEqual(record["client_netns"], record["server_netns"], record)
        self.assertNotEqual(record["client_netns"], status["netns"], record)
        tree.go(2)
        code, lines, err = tree.finish()
        self.assertEqual(code, 0, err)
        n = 1 << 20
        self.assertEqual(sorted(ss.program_lines(lines)), sorted([
            f"client: mode=echo connections=1 bytes_out={n} bytes_in={n} errors=0",
            f"server: mode=echo connections=1 bytes_in={n} bytes_out={n} errors=0"]), err)

    def test_without_capability_stays_tcp_and_says_why(self):
        """nobody's slipstreamd, in the initial namespaces, has no CAP_NET_ADMIN over namespaces
        root made: it cannot read sequence numbers there, so a connection between two of them
        stays TCP (no relay), and the client's trace names the missing capability."""
        if usable():
            self.skipTest(usable())
        topo = Topology(self, "n")
        daemon = sh(*self.as_user([os.path.join(self.bin, "slipstreamd"), "--idle-exit", "60"]))
        self.assertEqual(daemon.returncode, 0, daemon.stderr)
        trace = os.path.join(self.bin, "slipstream-trace")
        peer = os.path.join(self.bin, "switch_peer")
        port = ss.free_port()
        common = ["--mode", "echo", "--bytes", str(ECHO_BYTES), "--hold"]
        client_out = os.path.join(self.work, "client.out")
        # Two connections from one supervisor: the warning below is said once, not per connect.
        server = ss.Gated(self, topo.run_in(1, self.as_user(
            [trace, "--", peer, "server", "--port", str(port), "--bind", "0.0.0.0", "--count", "2",
             *common])))
        fr.wait_until(lambda: self.status().get("listeners"), 20, "the listener registered")
        client = ss.Gated(self, topo.run_in(0, self.as_user(
            [trace, "--trace", "-o", client_out, "--stats", "--", *ss.after_gate(
                [peer, "client", "--host", topo.addrs[1], "--port", str(port), "--count", "2",
                 "--parallel", "2", *common])])))
        fr.wait_until(lambda: len(self.status().get("supervisors", [])) >= 2, 20,
                      "both supervisors")
        client.go()
        c, s = client.ready(), server.ready()
        c_ino = harness.fd_socket_inode(c["pid"], c["fd"])
        self.assertNotIn(c_ino, proc_unix_inodes(c["pid"]))
        self.assertIn(c_ino, [e[3] for e in proc_tcp(c["pid"])])
        self.assertTrue(all(not n["sequence_numbers"] for n in self.status()["namespaces"]),
                        self.status()["namespaces"])
        client.go()
        server.go()
        server.go()  # the second connection's gate
        (ccode, cout, cerr), (scode, _, serr) = client.finish(), server.finish()
        self.assertEqual((ccode, scode), (0, 0), (cerr, serr))
        stats = ss.read_stats(client_out)
        self.assertEqual((stats["switched"], stats["relayed"], stats["tcp"]), (0, 0, 2), stats)
        connects = fr.calls(harness.read_trace(client_out), "connect")
        self.assertEqual(len(connects), 2, connects)
        for connect in connects:
            self.assertIn("cannot read TCP sequence numbers", connect["note"] or "")
            self.assertIn("CAP_NET_ADMIN", connect["note"] or "")
        # Both sides were supervised, so the user expected a switch: the client's supervisor says
        # once, on stderr, why not and what to change; the server's has nothing to say.
        said = [line for line in cerr if "another network namespace" in line]
        self.assertEqual(len(said), 1, cerr)
        self.assertIn(f"{topo.addrs[1]}:{port}", said[0])
        self.assertIn("no CAP_NET_ADMIN", said[0])
        self.assertIn("Run slipstreamd as root on the host", said[0])
        self.assertFalse([line for line in serr if "network namespace" in line], serr)


if __name__ == "__main__":
    harness.main()

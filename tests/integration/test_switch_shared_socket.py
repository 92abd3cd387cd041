#!/usr/bin/env python3
"""A switched connection shared between fds and processes keeps working and keeps its TCP names.

tests/programs/c/switch_share.c connects to a supervised echo server and then uses the
connection from a forked child (the child writes and the parent reads, and the reverse), through
dup/dup2 copies after closing the original, from a program exec'd by a child that inherited the
fd, and from a process that received the fd over SCM_RIGHTS: a child in the same supervised tree,
and a separately supervised program. Every process announces the connection with the
getsockname/getpeername answers it gets; the test checks that every announced fd is the same
AF_UNIX socket (the switched client end, connected to the server's fd) and that every process
got the TCP addresses. The output must equal the native run's (ports normalised).

DynamicSharedSocket runs every scenario with the dynamically linked builds (switch_share_dyn and
switch_peer_dyn, the exec'd program included) in hybrid mode.
"""

import re

import fixture_runs as fr
import harness
import switch_support as ss

READY = re.compile(r"^ready share pid=(?P<pid>\d+) fd=(?P<fd>\d+) local=(?P<local>\S+) "
                   r"peer=(?P<peer>\S+)$")
PORT = re.compile(r"(?<=\d):(\d+)\b")


def normalise(lines):
    names = {}
    return sorted(PORT.sub(lambda m: ":" + names.setdefault(m.group(1), f"P{len(names) + 1}"),
                           line) for line in lines)


class SharedSocket(ss.HybridMixin, ss.EvidenceMixin, fr.FixtureTest):

    def run_scenario(self, scenario, supervise, users, stays_tcp=False):
        """Runs one scenario; `users` processes announce the connection. Returns its output."""
        port_file = self.path(f"port.{supervise}")
        server_cmd = [self.fixture("switch_peer"), "server", "--port-file", port_file, "--mode",
                      "echo", "--hold"]
        sock_path = self.path(f"share.{supervise}.sock")
        receiver = None
        if scenario == "send":
            receiver_cmd = [self.fixture("switch_share"), "receive", "--path", sock_path,
                            "--hold"]
            receiver = ss.Gated(self, self.supervise(receiver_cmd) if supervise
                                else receiver_cmd)
        client_cmd = [self.fixture("switch_share"), scenario, "--port-file", port_file,
                      "--path", sock_path, "--hold"]
        if supervise:
            server = ss.Gated(self, self.supervise(server_cmd))
            fr.read_port(port_file)
            client = ss.Gated(self, self.supervise(ss.after_gate(client_cmd)))
            client.start_program()
        else:
            server = ss.Gated(self, server_cmd)
            fr.read_port(port_file)
            client = ss.Gated(self, client_cmd)
        server_end = server.ready()
        server.go()
        announced = []
        for k in range(users):
            source = receiver if receiver is not None and k == 1 else client
            m = READY.match(source.wait_line(r"^ready share "))
            end = {"pid": int(m["pid"]), "fd": int(m["fd"]), "local": m["local"],
                   "peer": m["peer"]}
            announced.append(end)
            inode = harness.fd_socket_inode(end["pid"], end["fd"])
            if k == 0:
                first_inode = inode
                if supervise and not stays_tcp:
                    self.assert_switched(end, server_end)
                else:
                    self.assert_on_tcp(end)
            else:
                self.assertEqual(inode, first_inode, f"{end} is the same socket")
                self.assertEqual((end["local"], end["peer"]),
                                 (announced[0]["local"], announced[0]["peer"]),
                                 f"process {end['pid']} must see the TCP addresses")
            source.go()
        lines = []
        for gated in ([receiver] if receiver else []) + [client]:
            code, out, err = gated.finish()
            self.assertEqual(code, 0, err)
            lines += ss.program_lines(out)
        code, out, err = server.finish()
        self.assertEqual(code, 0, err)
        lines += ss.program_lines(out)
        return normalise(lines)

    def compare(self, scenario, users, stays_tcp=False):
        native = self.run_scenario(scenario, False, users)
        self.assertFalse([line for line in native if "wrong" in line or "error-" in line], native)
        self.assertEqual(native, self.run_scenario(scenario, True, users, stays_tcp))
        self.assert_hybrid_used()

    # A copy of a socket made before its connect() would go on naming the TCP socket after a
    # switch, and what was written through it would be lost without an error. Such a connection
    # stays TCP (regression: it was switched, and the copy's bytes never arrived).
    def test_dup_before_connect_stays_tcp(self):
        self.compare("dup-before", 1, stays_tcp=True)

    def test_fork_before_connect_stays_tcp(self):
        self.compare("fork-before", 1, stays_tcp=True)

    def test_scm_rights_before_connect_stays_tcp(self):
        self.compare("scm-before", 1, stays_tcp=True)

    def test_fork_child_writes_parent_reads(self):
        self.compare("fork-child-writes", 1)

    def test_fork_parent_writes_child_reads(self):
        self.compare("fork-parent-writes", 1)

    def test_dup_and_dup2(self):
        self.compare("dup", 1)

    def test_exec_inherits_the_fd(self):
        self.compare("exec", 2)

    def test_scm_rights_within_the_tree(self):
        self.compare("scm", 2)

    # Regression: a switched fd received over SCM_RIGHTS under another slipstream-trace answered
    # getsockname/getpeername as the AF_UNIX socket it is. Checks that the receiver gets the same
    # answers as natively, as within one supervised tree.
    def test_scm_rights_to_another_supervised_program(self):
        self.compare("send", 2)


class DynamicSharedSocket(SharedSocket):
    HYBRID = True


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""A slipstreamd started by slipstream-trace holds none of its starter's fds.

The supervisor starts the daemon on demand, after it has set up its seccomp listener, signalfd
and epoll instances. A daemon that inherited them would keep the program's notification fd open
after the supervisor is gone (its calls could never fail open) and hold copies of sockets. The
test lets slipstream-trace start the daemon, then reads the daemon's fd table: no seccomp
listener, signalfd or pidfd, and no socket of the supervisor.
"""

import os

import fixture_runs as fr
import harness
import switch_support as ss

# The kernel names these links "anon_inode:seccomp notify", "anon_inode:[signalfd]" and, since
# pidfs (Linux 6.9), "pidfd:[N]" rather than "anon_inode:[pidfd]": match the kind, not one spelling.
FOREIGN = ("seccomp notify", "signalfd", "pidfd")


def foreign_fds(pid):
    """{fd: link} of `pid`'s seccomp notification fds, signalfds and pidfds."""
    fd_dir = f"/proc/{pid}/fd"
    links = {}
    for name in os.listdir(fd_dir):
        try:
            links[int(name)] = os.readlink(os.path.join(fd_dir, name))
        except FileNotFoundError:
            pass
    return {fd: link for fd, link in links.items() if any(k in link for k in FOREIGN)}, links


def pidfd_pid(pid, fd):
    """The process a pidfd of `pid` names (its fdinfo's "Pid:" line, Linux 5.3), or None."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


class DaemonFds(fr.FixtureTest):

    def test_spawned_daemon_inherits_nothing(self):
        self.assertNotIn("pid", ss.daemon_status(), "each test file has its own runtime dir")
        prog = ss.Gated(self, harness.supervised(["/bin/sh", "-c", "read line"]))
        fr.wait_until(lambda: "pid" in ss.daemon_status(), 20, "slipstreamd started")
        daemon = ss.daemon_status()["pid"]
        # The patterns recognise the supervisor's own notification fd, so they can see one.
        ours, _ = foreign_fds(prog.pid)
        self.assertTrue(any("seccomp notify" in link for link in ours.values()),
                        f"slipstream-trace's fds: {ours}")
        # The daemon's own pidfd of a supervisor that sent its gate ledger (drained once that
        # process exits) names slipstream-trace: an inherited one would not. Taken when the
        # ledger is handled, which may be just after the status answer.
        def session_pidfds():
            foreign, links = foreign_fds(daemon)
            return {fd: link for fd, link in foreign.items()
                    if "pidfd" in link and pidfd_pid(daemon, fd) == prog.pid}
        fr.wait_until(lambda: len(session_pidfds()) == 1, 10, "slipstreamd's pidfd of the supervisor")
        foreign, links = foreign_fds(daemon)
        sessions = session_pidfds()
        self.assertEqual(len(sessions), 1, f"slipstreamd's fds: {links}")
        foreign = {fd: link for fd, link in foreign.items() if fd not in sessions}
        self.assertEqual(foreign, {}, f"slipstreamd's fds: {links}")
        supervisor_sockets = {os.readlink(f"/proc/{prog.pid}/fd/{n}")
                              for n in os.listdir(f"/proc/{prog.pid}/fd")} & {
            link for link in links.values() if link.startswith("socket:")}
        # The daemon's session socket with this supervisor is its own end (another inode).
        self.assertEqual(supervisor_sockets, set(), f"slipstreamd's fds: {links}")
        prog.go()
        self.assertEqual(prog.finish()[0], 0)


if __name__ == "__main__":
    fr.main()

#!/usr/bin/env python3
"""The send/recv family's flags and address arguments answer on a switched socket as over TCP.

tests/programs/c/flags_probe.c (static C) runs every call of the family (send, sendto with and
without an address, sendmsg, sendmmsg, recv, recvfrom, recvmsg, recvmmsg) with every flag that
matters (MSG_PEEK, MSG_WAITALL, MSG_TRUNC, MSG_DONTWAIT, MSG_OOB, MSG_ERRQUEUE, MSG_MORE,
MSG_CONFIRM, MSG_DONTROUTE, MSG_EOR, MSG_NOSIGNAL, MSG_FASTOPEN, MSG_CMSG_CLOEXEC, MSG_ZEROCOPY
and their combinations, with blocking, non-blocking, EOF, SO_RCVTIMEO and signal variants), one
fresh connection per case, and prints the result, errno, bytes and what is left in the stream.
It runs natively (TCP loopback) and under slipstream-trace, where every connection is switched
(the probe checks each receiving fd in /proc/net/unix vs /proc/net/tcp; the supervisor's --stats
counts the switches); the two outputs must be equal line by line, except for the rows that
docs/differences.md lists. The probe's --unix mode (a plain AF_UNIX socketpair) shows what the
kernel alone would answer: each member fixed here must differ there, so this test fails without
the supervisor's answers.

The issue's three failing inputs also run between two processes, each under its own
slipstream-trace, in Go (CGO_ENABLED=0, raw syscalls) and Python, with the connection proven
switched (both fds AF_UNIX, connected to each other; the daemon lists the pair).
"""

import os
import sys

import fixture_runs as fr
import harness
import switch_support as ss

# docs/differences.md: rows that stay different.
STILL_DIFFERENT = {
    # MSG_MORE: TCP holds a partial segment back until the next send; AF_UNIX has no segments.
    "send_more", "sendto_addr_more",
    # msg_name of sendmsg/sendmmsg is in memory, out of the seccomp filter's sight: EISCONN.
    "sendmsg_name", "sendmmsg_name",
}

# Members of the kind that the kernel answers differently on AF_UNIX and Slipstream fixes: each
# must differ in the --unix run (the test would fail without the fix) and equal TCP when switched.
FIXED = [
    "recv_errqueue", "recv_errqueue_peek", "recv_peek_waitall", "recv_trunc_null",
    "recv_trunc_short_buffer", "recv_trunc_more_than_queued", "recv_trunc_peek",
    "recv_trunc_waitall", "recv_trunc_blocking", "recv_trunc_eof", "recv_trunc_timeout",
    "recv_trunc_signal", "recv_trunc_large", "recvfrom_addr_trunc", "recvmsg_trunc_null",
    "recvmsg_trunc_name", "recvmsg_trunc_waitall", "recvmsg_peek_waitall", "recvmsg_errqueue",
    "recvmmsg_trunc_null", "recvmmsg_peek_waitall", "recvmmsg_errqueue", "send_fastopen",
    "sendto_addr", "sendto_addr_other", "sendto_addr_len1", "sendto_addr_len128",
    "sendto_addr_bad_buffer", "sendto_addr_empty", "sendto_addr_dontwait", "sendto_addr_oob",
    "sendto_addr_after_shut_wr", "sendto_addr_sigpipe", "sendto_addr_large",
    "sendto_addr_large_signal", "sendto_addr_large_signal_restart", "sendto_addr_nonblocking_full",
]

# docs/differences.md: without WAIT_KILLABLE_RECV (kernels before 5.19, or --no-wait-killable) a
# signal withdraws a held call: EINTR where TCP reports partial progress, and the SIGPIPE of a
# failed send arrives after the call returned (here: after the probe ignores SIGPIPE again).
# A restarted call (SA_RESTART) resumes where the withdrawn one stopped: the _restart case must
# still equal TCP.
WITHOUT_KILLABLE = {
    "recv_peek_waitall_signal": "ret=EINTR data=- rest=012",
    "recv_trunc_signal": "ret=EINTR rest=-",
    "sendto_addr_large_signal": "partial=0 consistent=0",
}

# The issue's inputs, exactly as TCP answers them.
ISSUE_CASES = {
    "recv_peek_waitall": "ret=5 data=01234 rest=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
    "recv_trunc_null": "ret=5 rest=56789",
    "recv_trunc_short_buffer": "ret=8 buf=xxxxxxxxxxxxxxxx rest=89",
    "sendto_addr": "ret=5 rest=hello",
}


def parse(lines):
    """{case: observations} and the evidence line's counts."""
    cases, evidence = {}, None
    for line in lines:
        name, _, rest = line.partition(":")
        if name == "evidence":
            evidence = dict(kv.split("=") for kv in rest.split())
            evidence = {k: int(v) for k, v in evidence.items()}
        else:
            cases[name] = rest.strip()
    return cases, evidence


class SwitchFlags(ss.EvidenceMixin, fr.FixtureTest):
    # The native run is the reference of three tests; it does not depend on Slipstream, so one run
    # serves them all (each run sleeps about 10 s in its cases' quiet periods).
    _native = None

    def native(self):
        if SwitchFlags._native is None:
            SwitchFlags._native = self.probe("tcp")
        return dict(SwitchFlags._native)

    def probe(self, mode, extra=()):
        """Runs flags_probe natively ("tcp"), on a socketpair ("unix") or under slipstream-trace
        ("switched", with `extra` options); returns {case: observations}."""
        name = "flags_probe_dyn" if mode == "hybrid" else "flags_probe"
        cmd = [harness.program(name)] + (["--unix"] if mode == "unix" else [])
        stats = self.path("probe.stats")
        if mode in ("switched", "hybrid"):
            proc = ss.Gated(self, harness.supervised(ss.after_gate(cmd), stats=True,
                                                     extra=["-o", stats, *extra]))
            proc.start_program()
        else:
            proc = ss.Gated(self, cmd)
        code, out, err = proc.finish(timeout=300)
        self.assertEqual(code, 0, err)
        cases, evidence = parse(out)
        n = len(cases)
        self.assertGreater(n, 80)
        if mode in ("switched", "hybrid"):
            # The kernel's view: every receiving fd was an AF_UNIX socket while its case ran.
            self.assertEqual(evidence, {"unix": n, "tcp": 0})
            counts = ss.read_stats(stats)
            self.assertEqual((counts["switched"], counts["tcp"]), (2 * n, 0), counts)
        elif mode == "tcp":
            self.assertEqual(evidence, {"unix": 0, "tcp": n})
        return cases

    def test_c_probe_switched_equals_tcp(self):
        tcp = self.native()
        unix = self.probe("unix")
        switched = self.probe("switched")
        self.assertEqual(set(tcp), set(switched))
        self.maxDiff = None
        # Without Slipstream's answers the kernel differs on every member of the kind.
        for name in FIXED:
            self.assertNotEqual(tcp[name], unix[name], f"{name}: AF_UNIX alone agrees with TCP")
        for name, want in ISSUE_CASES.items():
            self.assertEqual(tcp[name], want, f"native {name}")
        same = {k: tcp[k] for k in tcp if k not in STILL_DIFFERENT}
        self.assertEqual(same, {k: switched[k] for k in same})
        # The documented differences are what docs/differences.md says, and nothing worse.
        self.assertEqual(switched["sendmsg_name"], "ret=EISCONN rest=-")
        self.assertEqual(switched["sendmmsg_name"], "ret=EISCONN len0=0 len1=0 rest=-")
        self.assertEqual(switched["send_more"], "ret=5 readable_at_once=1 ret2=1 rest=hello!")

    def test_c_probe_hybrid_equals_tcp(self):
        """The same probe dynamically linked (hybrid mode): the library also gives sendmsg and
        sendmmsg with a msg_name TCP's answer for the switched fds it saw connect or accept."""
        tcp = self.native()
        hybrid = self.probe("hybrid")
        self.maxDiff = None
        # MSG_MORE stays different; sendmmsg is not interposed.
        differ = {"send_more", "sendto_addr_more", "sendmmsg_name"}
        same = {k: tcp[k] for k in tcp if k not in differ}
        self.assertEqual(same, {k: hybrid[k] for k in same})
        self.assertNotEqual(tcp["sendmsg_name"], "ret=EISCONN rest=-")

    def test_c_probe_without_wait_killable(self):
        """Signals withdraw held calls: no byte is sent or discarded twice, none is lost."""
        tcp = self.native()
        switched = self.probe("switched", ["--no-wait-killable"])
        self.maxDiff = None
        for name, want in WITHOUT_KILLABLE.items():
            self.assertEqual(switched[name], want, name)
        self.assertRegex(switched["sendto_addr_sigpipe"], r"^ret=EPIPE sigpipe=[01] rest=EOF$")
        self.assertEqual(tcp["sendto_addr_large_signal_restart"],
                         "sent=4194304 received=4194304 same=1")
        skip = STILL_DIFFERENT | set(WITHOUT_KILLABLE) | {"sendto_addr_sigpipe"}
        same = {k: tcp[k] for k in tcp if k not in skip}
        self.assertEqual(same, {k: switched[k] for k in same})

    def pair(self, lang, supervise):
        """The issue's three inputs between a `lang` server and client; returns their lines."""
        programs = {
            # The Go runtime's preemption signal (SIGURG) may reach the thread blocked in the
            # MSG_PEEK|MSG_WAITALL recvfrom: both TCP and the supervisor then answer the bytes
            # peeked so far, as tcp_recvmsg() does, and the run no longer shows the full wait
            # (seen once in a loaded CI run: ret=1). Turned off here, in both runs.
            "go": lambda role, pf: ["env", "GODEBUG=asyncpreemptoff=1", harness.program("flagspeer"),
                                    role, "--port-file", pf],
            "py": lambda role, pf: [sys.executable, os.path.join(
                harness.SOURCE, "tests", "programs", "py", "flags_peer.py"), role,
                "--port-file", pf],
        }[lang]
        port_file = self.path(f"port.{lang}.{supervise}")
        server_cmd, client_cmd = programs("server", port_file), programs("client", port_file)
        if supervise:
            server = ss.Gated(self, harness.supervised(server_cmd))
            fr.read_port(port_file)
            client = ss.Gated(self, harness.supervised(ss.after_gate(client_cmd)))
            client.start_program()
        else:
            server = ss.Gated(self, server_cmd)
            fr.read_port(port_file)
            client = ss.Gated(self, client_cmd)
        c, s = client.ready(), server.ready()
        if supervise:
            self.assert_switched(c, s)
        else:
            self.assert_on_tcp(c)
            self.assert_on_tcp(s)
        client.go()
        server.go()
        server_code, server_out, server_err = server.finish()
        client_code, client_out, client_err = client.finish()
        self.assertEqual(server_code, 0, server_err)
        self.assertEqual(client_code, 0, client_err)
        return ss.program_lines(server_out), ss.program_lines(client_out)

    def issue_cases(self, lang, trunc_line):
        native = self.pair(lang, False)
        switched = self.pair(lang, True)
        self.assertEqual(native[0][:4], [
            "peek_waitall: ret=5 data=01234", trunc_line,
            "rest: 56789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP", "sendto: ret=5"])
        self.assertEqual(native[1][0], "got: hello")
        self.assertEqual(native, switched)

    def test_go_issue_cases(self):
        self.issue_cases("go", "trunc: ret=5")

    def test_python_issue_cases(self):
        self.issue_cases("py", "trunc: ret=5 buf=xxxxxxxx")


if __name__ == "__main__":
    fr.main()

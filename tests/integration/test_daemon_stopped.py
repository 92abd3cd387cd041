#!/usr/bin/env python3
"""A stopped slipstreamd delays only the calls that wait for it, never the whole process tree.

docs/design.md, "The notification loop": the supervisor's requests on the notification path
(the claim of an accepted connection, a listener's registration) are asynchronous. One Python
program under slipstream-trace --no-preload (every socket call is a trapped call) listens; then
the test stops the daemon (SIGSTOP) and the program, in three threads at once:
  - accepts a connection that the main thread makes: the supervisor's claim waits for the daemon;
  - listens on a second socket: its registration waits for the daemon;
  - (main thread) times 20 trapped getsockname() calls on its TCP socket.
The getsockname calls must be answered at once (each < 0.5 s; the claim's time-out is 3 s, and
when the claim blocked the event loop, as before, the first one took about 2.7 s). The accept and
the listen then complete on their own (the claim gives up: the connection stays TCP). After
SIGCONT the two ends exchange bytes exactly; the second listener takes a connection.
"""

import os
import signal
import subprocess

import fixture_runs as fr
import switch_support as ss

PROGRAM = r"""
import socket, sys, threading, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(8)
port = l.getsockname()[1]
print("port", port, flush=True)
sys.stdin.readline()  # the daemon is stopped now

served = {}
def serve():
    c, _ = l.accept()
    served["accepted"] = time.monotonic()
    served["conn"] = c
second = socket.socket()
second.bind(("127.0.0.1", 0))
def listen():
    second.listen(8)
    served["listened"] = time.monotonic()
threads = [threading.Thread(target=serve), threading.Thread(target=listen)]
for t in threads:
    t.start()
c = socket.create_connection(("127.0.0.1", port))
time.sleep(0.3)  # the accept's claim (and the listen's registration) now wait for the daemon
worst = 0.0
for _ in range(20):
    start = time.monotonic()
    c.getsockname()
    worst = max(worst, time.monotonic() - start)
print("getsockname worst_ms", round(worst * 1000, 3), flush=True)
for t in threads:
    t.join(30)
print("accept", "accepted" in served, "listen", "listened" in served, flush=True)
sys.stdin.readline()  # the daemon runs again

conn = served["conn"]
payload = bytes(range(256)) * 256
c.sendall(payload)
got = b""
while len(got) < len(payload):
    got += conn.recv(65536)
conn.sendall(got[::-1])
back = b""
while len(back) < len(payload):
    back += c.recv(65536)
print("bytes", got == payload, back == payload[::-1], flush=True)
with socket.create_connection(second.getsockname()) as d:
    e, _ = second.accept()
    d.sendall(b"second")
    print("second", e.recv(6).decode(), flush=True)
    e.close()
"""


class DaemonStopped(fr.FixtureTest):

    def test_stopped_daemon_delays_only_its_calls(self):
        prog = subprocess.Popen(self.wrap(["python3", "-c", PROGRAM], True,
                                          extra=["--no-preload"]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: prog.poll() is None and prog.kill())
        line = prog.stdout.readline().split()
        self.assertEqual(line[:1], ["port"], (line, prog.stderr.read() if not line else ""))
        port = int(line[1])
        status = ss.daemon_status()
        self.assertTrue(any(l["address"].endswith(f":{port}") for l in status["listeners"]),
                        status)
        daemon = status["pid"]
        os.kill(daemon, signal.SIGSTOP)
        self.addCleanup(lambda: ss.alive(daemon) and os.kill(daemon, signal.SIGCONT))

        prog.stdin.write("stopped\n")
        prog.stdin.flush()
        timing = prog.stdout.readline().split()
        self.assertEqual(timing[:2], ["getsockname", "worst_ms"], timing)
        self.assertLess(float(timing[2]), 500.0,
                        "a trapped call waited for the stopped daemon's answer to another one")
        # The claim and the registration gave up (3 s) without the daemon.
        self.assertEqual(prog.stdout.readline(), "accept True listen True\n")

        os.kill(daemon, signal.SIGCONT)
        prog.stdin.write("running\n")
        prog.stdin.flush()
        out, err = prog.communicate(timeout=60)
        self.assertEqual((prog.returncode, out.splitlines()),
                         (0, ["bytes True True", "second second"]), err)


if __name__ == "__main__":
    fr.main()

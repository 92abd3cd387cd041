#!/usr/bin/env python3
# Median time of the first getpeername() on a connection whose peer has just reset it (SO_LINGER
# {1, 0} and close), and of the next one; 200 connections. Run it plain and under
# slipstream-trace: BENCHMARKS.md section 29.
import socket, struct, time, statistics
ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(64)
first, later = [], []
for i in range(200):
    c = socket.create_connection(ls.getsockname()); s, _ = ls.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.send(b"x"); c.close()
    time.sleep(0.001)
    for bucket in (first, later):
        t = time.perf_counter()
        try: s.getpeername()
        except OSError: pass
        bucket.append((time.perf_counter() - t) * 1e6)
    s.close()
print(f"first getpeername after the peer's reset: median {statistics.median(first):.0f} us; the next: {statistics.median(later):.0f} us")

"""nginx (one worker) with wrk: keep-alive and Connection: close, requests per second."""

import os
import re
import signal

from ..context import VARIANTS
from ..procs import SampleError
from ..workload import Server, Workload

CONF = """\
worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{ {listen} location / {{ return 200 "hello, slipstream\\n"; }} }}
}}
"""

# wrk's summary: "Requests/sec:  12345.67"; errors: "Non-2xx or 3xx responses: N",
# "Socket errors: connect N, read N, write N, timeout N".
RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class Nginx(Workload):
    name = "nginx"
    description = ("nginx 1 worker (`return 200`, 18-byte body) with wrk -t1 -c10 for the profile's "
                   "time: HTTP/1.1 keep-alive, and `Connection: close` (one connection per "
                   "request: the set-up cost). Both are dynamically linked, so `slipstream` is hybrid "
                   "mode and `no-preload` the supervisor path for every call.")
    # No `unix`: wrk speaks TCP only.
    variants = ["tcp", "slipstream", "no-preload", "client-only", "server-only"]

    def declare(self):
        self.ctx.results.declare_metric(self.name, "rate", "req/s", "higher", "requests per second")

    def cases(self):
        return ["keep-alive", "close"]

    def _server(self, key, port, supervised):
        d = self.ctx.path(f"nginx-{key}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(dir=d, listen=f"listen 127.0.0.1:{port};"))
        # SIGQUIT: graceful shutdown (nginx's SIGTERM is a fast one; both write no response).
        return Server(self, key, ["nginx", "-p", d, "-c", conf], supervised, tcp_port=port,
                      stop_signal=signal.SIGQUIT)

    def setup(self):
        p1, p2, p3 = self.ctx.free_port(), self.ctx.free_port(), self.ctx.free_port()
        self.url = {"plain": f"http://127.0.0.1:{p1}/", "supervised": f"http://127.0.0.1:{p2}/",
                    "supervised-no-preload": f"http://127.0.0.1:{p3}/"}
        self.servers = {
            "plain": self._server("plain", p1, False),
            "supervised": self._server("supervised", p2, True),
            "supervised-no-preload": self._server("supervised-no-preload", p3, True),
        }
        self.servers = {k: s for k, s in self.servers.items() if k in self.used_servers()}
        for s in self.servers.values():
            s.start()

    def measure(self, case, variant, rep):
        t = int(self.p["nginx_time"]) if rep >= 0 else 1  # wrk takes whole seconds
        header = ["-H", "Connection: close"] if case == "close" else []
        argv = ["wrk", "-t1", "-c10", f"-d{t}s", *header, self.url[VARIANTS[variant][0]]]
        out, err, _ = self.client(argv, case, variant, rep, timeout=60 + 5 * t)
        m = RATE.search(out)
        if not m:
            raise SampleError("wrk printed no Requests/sec", " ".join(argv), (out + err)[-800:])
        errors = SOCKET_ERRORS.search(out)
        # With Connection: close wrk counts the server's close after each response as a read
        # error on some versions; connect errors and timeouts are real failures.
        if errors and (int(errors.group(1)) or int(errors.group(4))):
            raise SampleError(f"wrk: {errors.group(0)}", " ".join(argv), out[-800:])
        if "Non-2xx" in out:
            raise SampleError("wrk: non-2xx responses", " ".join(argv), out[-800:])
        return [(case, "rate", None, float(m.group(1)))]

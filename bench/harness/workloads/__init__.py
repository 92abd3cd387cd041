"""One module per workload; ALL lists them in the order bench/run runs them."""

from .connrate import ConnRate
from .containers import Containers
from .gohttp import GoHttp
from .iperf import Iperf3
from .memcached import Memcached
from .netpipe import NetPipe
from .netns import Netns
from .nginx import Nginx
from .pgbench import PgBench
from .redis import Redis
from .sweep import Sweep
from .syscalls import Syscalls

# netns and containers last: root only, and they build networks (containers: a Docker image).
ALL = [Syscalls, Sweep, NetPipe, ConnRate, Nginx, Memcached, Redis, PgBench, Iperf3, GoHttp, Netns, Containers]
BY_NAME = {w.name: w for w in ALL}

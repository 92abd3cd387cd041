"""Helpers for the Docker tests (test_docker.py): a running dockerd, an image of our binaries made
without a registry, containers that are always removed, and the kernel's evidence read inside a
container.

dockerd: when `docker info` fails, `ensure_dockerd()` starts `dockerd` (as root) in its own
session, logging to /tmp/slipstream-dockerd.log, and waits for it at most DOCKERD_WAIT seconds.
It never stops a dockerd: neither one it found (the machine's) nor one it started, which then
stays up as the machine's service would (another test file running in parallel may be using it;
dockerd also leaves its iptables changes, FORWARD policy DROP and br_netfilter, in place when it
stops). A lock file keeps two test files from starting two daemons.

The image: `docker import` of a root file system holding the static busybox (for sh, cat, sleep),
slipstream-trace, slipstreamd and libslipstream-preload.so with every library `ldd` lists (copied
to the same path), static C fixtures, /etc/passwd with root and nobody, and /tmp (1777).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import fixture_runs as fr
import harness
import switch_support as ss

DOCKERD_WAIT = 30.0
DOCKERD_LOG = "/tmp/slipstream-dockerd.log"
LOCK = "/tmp/slipstream-dockerd.lock"
BUSYBOX_APPLETS = ["sh", "cat", "sleep", "readlink", "ls", "id", "env", "kill", "true", "timeout"]
BIN = "/slip/bin"  # where our binaries are in the image
PROFILE = os.path.join(harness.SOURCE, "contrib", "docker", "seccomp.json")
# dockerd gives runc the container's OCI configuration here (Docker 20.10; containerd shim v2).
BUNDLES = "/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby"
NOBODY = "65534:65534"


def docker(*args, timeout=60, check=True, **kw):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                            **kw)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}...: {result.returncode} "
                           f"{result.stderr.strip()}")
    return result


def _docker_answers():
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20,
                      check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def _mount_cgroups():
    """dockerd refuses to start without cgroups; a machine whose init mounted none gets them
    from cgroupfs-mount (scripts/setup installs it)."""
    with open("/proc/self/mounts") as f:
        if any(line.split()[2] in ("cgroup", "cgroup2") for line in f if len(line.split()) > 2):
            return
    if shutil.which("cgroupfs-mount"):
        subprocess.run(["cgroupfs-mount"], check=False, capture_output=True, timeout=30)


def ensure_dockerd():
    """Makes sure a dockerd answers; raises SkipTest naming what is missing, or RuntimeError."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root: starts dockerd and runs containers")
    for tool in ("docker", "dockerd"):
        if shutil.which(tool) is None:
            raise unittest.SkipTest(f"{tool} not installed (scripts/setup installs docker.io)")
    if shutil.which("busybox") is None:
        raise unittest.SkipTest("busybox not installed (scripts/setup installs busybox-static)")
    if _docker_answers():
        return
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _docker_answers():
            return
        _mount_cgroups()
        with open(DOCKERD_LOG, "ab") as log:
            subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        deadline = time.monotonic() + DOCKERD_WAIT
        while not _docker_answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {DOCKERD_WAIT:.0f}s; "
                                   f"see {DOCKERD_LOG}")
            time.sleep(0.2)


def _libraries(path):
    """Absolute paths of the shared libraries (and the loader) `ldd` lists for `path`."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _copy(src, root, dst):
    target = os.path.join(root, dst.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(src, target)  # follows symlinks: the file itself under the name ldd gave
    os.chmod(target, 0o755)


def build_image(name, fixtures, extra=None):
    """Imports an image `name` with our binaries and the `fixtures` (test programs) in /slip/bin,
    and the programs `extra` ({name in /slip/bin: path on the host}, e.g. a daemon to measure)."""
    binaries = {"slipstream-trace": harness.TRACE_BIN, "slipstreamd": ss.DAEMON_BIN}
    binaries.update(extra or {})
    preload = os.path.join(harness.BUILD, "preload-fallback", "libslipstream-preload.so")
    if os.path.exists(preload):
        binaries["libslipstream-preload.so"] = preload  # found next to slipstream-trace
    for fixture in fixtures:
        binaries[fixture] = harness.program(fixture)
    with tempfile.TemporaryDirectory(prefix="slipstream-rootfs-") as root:
        for sub, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("proc", 0o755)):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            os.chmod(os.path.join(root, sub), mode)
        _copy(shutil.which("busybox"), root, "/bin/busybox")
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        for name_in_image, src in binaries.items():
            _copy(src, root, f"{BIN}/{name_in_image}")
            for lib in _libraries(src):
                _copy(lib, root, lib)
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\nnogroup:x:65534:\n")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        result = subprocess.run(["docker", "import", "-", name], stdin=tar.stdout,
                                capture_output=True, text=True, timeout=120)
        tar.stdout.close()
        tar.wait()
        if result.returncode != 0:
            raise RuntimeError(f"docker import: {result.stderr.strip()}")


def remove_image(name):
    docker("rmi", "-f", name, check=False)


def remove_stale_images(prefix):
    """Removes images `prefix`PID[-...] whose test process is gone (killed before its cleanup
    ran)."""
    names = docker("images", "--format", "{{.Repository}}", check=False).stdout.split()
    for name in names:
        pid = name[len(prefix):].split("-")[0]
        if name.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove_image(name)


class DockerTest(fr.FixtureTest):
    """A test class whose tests need dockerd and an image of our binaries with the class's
    FIXTURES, imported once for the class (IMAGE_PREFIX PID-CLASS) and removed after it. Without
    Docker every test skips (in setUp, so that CTest sees the file skipped: exit 77)."""

    IMAGE_PREFIX = "slipstream-test-"
    FIXTURES = ()

    @classmethod
    def setUpClass(cls):
        cls.image, cls.skip_reason = None, None
        try:
            ensure_dockerd()
        except unittest.SkipTest as e:
            cls.skip_reason = str(e)
            return
        remove_stale_images(cls.IMAGE_PREFIX)
        cls.image = f"{cls.IMAGE_PREFIX}{os.getpid()}-{cls.__name__.lower()}"
        build_image(cls.image, list(cls.FIXTURES))
        cls.addClassCleanup(remove_image, cls.image)

    def setUp(self):
        if self.skip_reason:
            raise unittest.SkipTest(self.skip_reason)
        super().setUp()


class Container:
    """A container of `image` running `sleep`, into which commands are started with `docker
    exec`. Its network is `network` (default none: loopback only; "bridge": Docker's default
    bridge; "container:ID": another container's namespace, as the containers of a Kubernetes pod).
    Removed (docker rm -f) by the test's cleanup."""

    def __init__(self, test, image, *, user=None, options=(), network="none"):
        self.user = user
        args = ["run", "-d", "--rm", "--network", network, *options]
        if user:
            args += ["--user", user]
        # Bounded even if the test is killed before its cleanup: --rm removes it when sleep ends.
        args += [image, "/bin/sleep", "300"]
        self.id = docker(*args).stdout.strip()
        test.addCleanup(docker, "rm", "-f", self.id, check=False)

    def exec_argv(self, cmd, *, interactive=False):
        args = ["docker", "exec"]
        if interactive:
            args.append("-i")
        return args + [self.id, *cmd]

    def run(self, cmd, timeout=30, check=True):
        return docker("exec", self.id, *cmd, timeout=timeout, check=check)

    def address(self):
        """The container's IPv4 address on Docker's default bridge."""
        return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", self.id).stdout.strip()

    def read(self, path):
        return self.run(["cat", path]).stdout

    def oci_seccomp(self):
        """The seccomp section dockerd gave runc for this container (its effective profile)."""
        with open(os.path.join(BUNDLES, self.id, "config.json")) as f:
            return json.load(f)["linux"].get("seccomp")

    def snapshot(self, ends):
        """One look at the kernel inside the container: the socket inode of each (pid, fd) in
        `ends`, the container's /proc/net/unix and /proc/net/tcp{,6}, and which executable holds
        each socket (every fd of every process the container's /proc shows)."""
        holders = ("for p in /proc/[0-9]*; do e=$(readlink $p/exe); for f in $p/fd/*; do "
                   "echo \"$e $(readlink $f)\"; done; done 2>/dev/null")
        script = "; ".join(
            [f"echo fd {pid} {fd} $(readlink /proc/{pid}/fd/{fd})" for pid, fd in ends] +
            ["echo '== unix'", "cat /proc/net/unix", "echo '== tcp'", "cat /proc/net/tcp",
             "cat /proc/net/tcp6 2>/dev/null", "echo '== holders'", holders, "true"])
        return Snapshot(self.run(["sh", "-c", script]).stdout)


class Snapshot:
    """Parsed output of Container.snapshot."""

    def __init__(self, text):
        self.inodes, self.unix, self.tcp, self.holders = {}, set(), [], {}
        section = None
        for line in text.splitlines():
            if line.startswith("fd "):
                _, pid, fd, *link = line.split()
                m = re.match(r"socket:\[(\d+)\]", link[0] if link else "")
                self.inodes[(int(pid), int(fd))] = int(m.group(1)) if m else None
            elif line.startswith("== "):
                section = line[3:]
            elif section == "unix":
                fields = line.split()
                if len(fields) >= 7 and fields[6].isdigit():
                    self.unix.add(int(fields[6]))
            elif section == "holders":
                m = re.match(r"(\S+) socket:\[(\d+)\]$", line)
                if m:
                    self.holders.setdefault(int(m.group(2)), set()).add(os.path.basename(m.group(1)))
            elif section == "tcp":
                fields = line.split()
                if len(fields) >= 10 and fields[0].endswith(":") and fields[0][:-1].isdigit():
                    self.tcp.append((ss._hex_addr(fields[1]), ss._hex_addr(fields[2]),
                                     int(fields[3], 16), int(fields[9])))

    def tcp_inodes(self):
        return {inode for *_, inode in self.tcp if inode}


def allowed_syscalls(seccomp):
    """Names a seccomp profile (Docker's or OCI's form) allows unconditionally."""
    return {name for rule in seccomp.get("syscalls", [])
            if rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("args")
            for name in rule.get("names", [])}

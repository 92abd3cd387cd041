"""Describes the machine a run happened on; stored with every result."""

import os
import platform
import subprocess

PACKAGES = ["memcached", "redis-server", "redis-tools", "postgresql-15", "netpipe-tcp", "iperf3",
            "golang-go", "gcc", "libseccomp2", "gnuplot-nox"]


def _cmd(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def loadavg():
    text = _read("/proc/loadavg") or ""
    return [float(x) for x in text.split()[:3]] if text else None


def describe(repo, trace_bin):
    cpu_model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    os_release = {}
    for line in (_read("/etc/os-release") or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            os_release[k] = v.strip('"')
    versions = {}
    for pkg in PACKAGES:
        v = _cmd(["dpkg-query", "-W", "-f=${Version}", pkg])
        if v:
            versions[pkg] = v
    hypervisor = None
    for line in (_cmd(["dmesg"]) or "").splitlines():
        if "Hypervisor detected" in line:
            hypervisor = line.split("Hypervisor detected:", 1)[1].strip()
            break
    vulns = {}
    vdir = "/sys/devices/system/cpu/vulnerabilities"
    if os.path.isdir(vdir):
        for name in sorted(os.listdir(vdir)):
            vulns[name] = _read(os.path.join(vdir, name))
    git = {
        "commit": _cmd(["git", "-C", repo, "rev-parse", "HEAD"]),
        "describe": _cmd(["git", "-C", repo, "log", "-1", "--format=%h %s"]),
        # Files changed but not committed (the build measured may include them).
        "dirty": (_cmd(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"]) or "").splitlines(),
    }
    sysctls = {}
    for name in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.core.rmem_default", "net.core.wmem_default",
                 "net.ipv4.tcp_tw_reuse", "kernel.randomize_va_space"):
        sysctls[name] = _read("/proc/sys/" + name.replace(".", "/"))
    return {
        "cpu_model": cpu_model,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": mem_kb // 1024 if mem_kb else None,
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "distro": os_release.get("PRETTY_NAME"),
        "hypervisor": hypervisor,
        "cpu_vulnerabilities": vulns,
        "python": platform.python_version(),
        "go": _cmd(["go", "version"]),
        "packages": versions,
        "slipstream_trace": _cmd([trace_bin, "--version"]),
        "git": git,
        "sysctl": sysctls,
        "loadavg_start": loadavg(),
    }

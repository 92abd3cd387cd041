"""Helpers shared by the workloads."""

import json

from ..procs import SampleError


def json_lines(text, command=""):
    """Parses the JSON-lines output of our bench programs."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SampleError(f"unparsable output line {line[:80]!r}: {e}", command)
    if not out:
        raise SampleError("no results in output", command, text[-500:])
    return out


def tcp_addr(port, host=None):
    return f"tcp:{host or '127.0.0.1'}:{port}"

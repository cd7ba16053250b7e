"""The driver's side of the processes it starts: load generator workers, and what /proc
says about them and the servers (CPU time, resident memory). The servers (gateway,
baseline) are `gateway.client.process.ServerProcess`es, started in their own session.

Every child runs in its own session, so stopping one stops its process group; every
wait has a timeout, and `stop`/`kill` are safe to call twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import WorkerResult, WorkerSpec

__all__ = [
    "BenchError",
    "BenchSkipped",
    "CpuSample",
    "PidSource",
    "Worker",
    "cpu_seconds",
    "rss_kib",
    "sample_cpu",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run could not be carried out (a process failed or timed out)."""


class BenchSkipped(Exception):
    """A run cannot take place on this machine (no PostgreSQL server, no HAProxy): said
    once, not counted as a failure."""


def _spawn(
    argv: Sequence[str], log: Path, *, pipes: bool = False, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out,  # the child keeps its own copy of the descriptor
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _system_busy() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


# A role's processes: fixed pids, or found again at each sample (PostgreSQL's backends).
PidSource = Sequence[int] | Callable[[], Sequence[int]]


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    busy: float
    by_role: dict[str, dict[int, float]]  # role -> pid -> CPU seconds

    def cores_since(self, earlier: CpuSample) -> dict[str, float]:
        """Cores used per role between two samples, and `other`: everything else on
        the machine (another engineer's tests, say), which makes figures noisy. A
        process that started in between counts from zero; one that ended in between
        is not seen, and its time falls into `other`."""
        wall = self.wall - earlier.wall
        cores = {
            role: sum(t - earlier.by_role.get(role, {}).get(pid, 0.0) for pid, t in now.items())
            / wall
            for role, now in self.by_role.items()
        }
        cores["other"] = max(0.0, (self.busy - earlier.busy) / wall - sum(cores.values()))
        return cores


def sample_cpu(pids: Mapping[str, PidSource]) -> CpuSample:
    by_role: dict[str, dict[int, float]] = {}
    for role, source in pids.items():
        times = by_role[role] = {}
        for pid in source() if callable(source) else source:
            with contextlib.suppress(OSError):  # it has just ended
                times[pid] = cpu_seconds(pid)
    return CpuSample(time.time(), _system_busy(), by_role)


# -- load generator workers ----------------------------------------------------------


class Worker:
    """One `python -m bench.loadgen` process and its line protocol (see `bench.loadgen`)."""

    def __init__(self, spec: WorkerSpec, workdir: Path, name: str) -> None:
        self.spec = spec
        self.name = name
        self.log = workdir / f"{name}.log"
        spec_path = workdir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        self.proc = _spawn(
            [sys.executable, "-m", "bench.loadgen", str(spec_path)], self.log, pipes=True
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        """The next message from the worker, which must be `event`, before `deadline`
        (monotonic)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {event!r} in time:\n{_tail(self.log)}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(
                        f"{self.name} exited before {event!r} "
                        f"({self.proc.wait(timeout=10)}):\n{_tail(self.log)}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise BenchError(f"{self.name}: expected {event!r}, got {message}")
        return message

    def command(self, **message: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise BenchError(f"{self.name} is gone:\n{_tail(self.log)}") from e

    def result(self) -> WorkerResult:
        self.proc.wait(timeout=30)
        result: WorkerResult = json.loads(Path(self.spec["result_path"]).read_text())
        return result

    def kill(self) -> None:
        _kill_group(self.proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

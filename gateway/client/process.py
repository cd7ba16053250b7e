"""A gateway (or any server answering `/healthz`) as a child process: started with given
options and environment on a free or given port, waited for until `/healthz` answers
200, stopped with SIGTERM and then SIGKILL after a grace, its output kept in a log file.

`vitals demo`, the end-to-end and browser tests and the benchmark start their servers
through `ServerProcess`, so there is one readiness loop and one stop sequence; a child
that is not a server (a test's simulator) is a `ChildProcess`, stopped the same way.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "START_TIMEOUT_S",
    "STOP_GRACE_S",
    "ChildProcess",
    "ServerFailed",
    "ServerProcess",
    "free_port",
    "vitals_command",
    "vitals_serve",
]

START_TIMEOUT_S = 20.0
# Above the gateway's own shutdown grace (`shutdown_grace_s`, 10 s as shipped), so a
# SIGKILL only ever ends a gateway that did not keep its promise.
STOP_GRACE_S = 15.0
_POLL_S = 0.05
_TAIL_LINES = 30


class ServerFailed(Exception):
    """The server exited, or did not answer `/healthz` in time; the message ends with the
    tail of its log when its output goes to one."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (another program may take it before the server)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def vitals_command(*args: str) -> list[str]:
    """`vitals ARGS` run by this interpreter (`python -m gateway`), whatever is on PATH."""
    return [sys.executable, "-m", "gateway", *args]


class ChildProcess:
    """One child process, startable again after it stopped or was killed (each start
    appends to the same log).

    `log_dir`: stdout and stderr go to `log_dir/NAME.log`; without it the child writes
    to this process's own. `env` is laid over this process's environment when the child
    starts. `own_session`: the child leads its own process group and every signal goes
    to the whole group.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.log_path = None if log_dir is None else log_dir / f"{name}.log"
        self.env = dict(env or {})
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False  # the last `stop` ended it with SIGKILL after the grace

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"the {self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the child (and return at once)."""
        assert not self.running, f"the {self.name} is running already"
        self.killed = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.log_path is None:
            self.proc = self._popen(env, None, None)
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = self._popen(env, log.fileno(), subprocess.STDOUT)

    def _popen(
        self, env: dict[str, str], stdout: int | None, stderr: int | None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=self.own_session,
        )

    def send_signal(self, sig: int) -> None:
        """`sig` to the child (to its group with `own_session`), if it still runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            if self.own_session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass  # it ended meanwhile

    def stop(self, grace: float | None = STOP_GRACE_S, *, signalled: bool = False) -> int | None:
        """SIGTERM (the graceful path), then SIGKILL if it has not exited after `grace`
        seconds (`killed` says so; None: wait as long as it takes). Returns the exit code;
        None if never started. Safe to call again. `signalled`: the caller already sent
        SIGTERM (a second one, once its handler is gone, would kill it mid-shutdown)."""
        if self.proc is None:
            return None
        if not signalled:
            self.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.killed = True
            return self.kill()

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs at all. Returns the exit code."""
        assert self.proc is not None, f"the {self.name} was never started"
        self.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def log_text(self) -> str:
        """Everything the child wrote, over all its starts ("" without a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _tail(self) -> str:
        tail = self.log_tail()
        return f"; last lines of {self.log_path}:\n{tail}" if tail else ""


class ServerProcess(ChildProcess):
    """A server child listening on `host:port`: `start` returns once it answers
    `/healthz`. `ssl_context`: `/healthz` is asked over https, trusting it."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        name: str = "gateway",
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(command, name=name, log_dir=log_dir, env=env, own_session=own_session)
        self.port = port
        self.host = host
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Spawn the server and return once `/healthz` answers 200. ServerFailed if it
        exits first or is not ready within `timeout`; then nothing is left running."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except ServerFailed:
            self.stop()
            raise

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll `/healthz` until it answers 200; ServerFailed if the child exits first
        or `timeout` seconds pass."""
        assert self.proc is not None, f"the {self.name} was never started"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"the {self.name} exited with code {self.proc.returncode}{self._tail()}"
                )
            if self._healthy():
                return
            if time.monotonic() >= deadline:
                raise ServerFailed(
                    f"the {self.name} did not become ready at {self.url} "
                    f"within {timeout:.0f} s{self._tail()}"
                )
            time.sleep(_POLL_S)

    def _healthy(self) -> bool:
        # Never through an http_proxy from the environment: the server is this machine's.
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        try:
            with urllib.request.build_opener(*handlers).open(f"{self.url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except (OSError, http.client.HTTPException):  # not listening yet, or not ready
            return False


def vitals_serve(
    *options: str,
    port: int | None = None,
    host: str = "127.0.0.1",
    name: str = "gateway",
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    own_session: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> ServerProcess:
    """`vitals serve --host HOST --port PORT OPTIONS` (a free port unless given), not
    started yet; `name` names its log file (`log_dir/NAME.log`)."""
    port = free_port(host) if port is None else port
    return ServerProcess(
        vitals_command("serve", "--host", host, "--port", str(port), *options),
        port=port,
        host=host,
        name=name,
        log_dir=log_dir,
        env=env,
        own_session=own_session,
        ssl_context=ssl_context,
    )

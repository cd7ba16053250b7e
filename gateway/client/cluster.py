"""Several `vitals serve` replicas on one shared database behind one HAProxy, all child
processes on 127.0.0.1: started together, waited for until HAProxy sees every replica
up, signalled one by one (crash, freeze, rolling restart), stopped.

Each replica and HAProxy is a `ServerProcess` (`process.py`): one readiness loop, one
stop sequence, one log per process in `run_dir`. HAProxy runs `deploy/haproxy.cfg` as
an operator would, with the `replica1` server lines written once per replica and the
addresses in its environment (`render_haproxy_config`). `vitals cluster` and the
cluster tests start their replicas here.
"""

from __future__ import annotations

import csv
import http.client
import io
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from gateway.client.process import (
    START_TIMEOUT_S,
    STOP_GRACE_S,
    ServerFailed,
    ServerProcess,
    free_port,
    vitals_serve,
)

__all__ = [
    "DEVICES_BACKEND",
    "HAPROXY",
    "Cluster",
    "HaproxyMissing",
    "haproxy_config_path",
    "render_haproxy_config",
]

HAPROXY = "haproxy"
DEVICES_BACKEND = "devices"  # the backend whose health checks the others track
_HOST = "127.0.0.1"
_POLL_S = 0.1
# A template's server line of replica 1: `server replica1 "${LB_REPLICA1-default}" …`.
_SERVER_LINE = re.compile(r'^(\s*)server replica1 "\$\{LB_REPLICA1(?:-[^}]*)?\}"(.*)$')


class HaproxyMissing(ServerFailed):
    """No `haproxy` on PATH."""

    def __init__(self) -> None:
        super().__init__("haproxy is not installed (install it: apt-get install haproxy)")


def haproxy_config_path() -> Path:
    """The shipped `deploy/haproxy.cfg`: beside the packages in a checkout (or editable
    install), `gateway/_shipped_deploy/` in a wheel."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "_shipped_deploy", here.parent / "deploy"):
        if (candidate / "haproxy.cfg").is_file():
            return candidate / "haproxy.cfg"
    raise FileNotFoundError(f"deploy/haproxy.cfg not found beside {here}")


def render_haproxy_config(template: str, replicas: int) -> str:
    """`template` with each `server replica1 "${LB_REPLICA1…}"` line written once per
    replica (`replicaN`, `${LB_REPLICAN}`: addresses come from the environment, as for
    an operator) and the template's other numbered server lines dropped."""
    if replicas < 1:
        raise ValueError(f"a cluster needs at least one replica, not {replicas}")
    out: list[str] = []
    found = False
    for line in template.splitlines():
        match = _SERVER_LINE.match(line)
        if match:
            found = True
            indent, rest = match.groups()
            out += [
                f'{indent}server replica{n} "${{LB_REPLICA{n}}}"'
                + rest.replace("/replica1", f"/replica{n}")
                for n in range(1, replicas + 1)
            ]
        elif not re.match(r"^\s*server replica\d+ ", line):
            out.append(line)
    if not found:
        raise ValueError('no `server replica1 "${LB_REPLICA1}"` line in the HAProxy template')
    return "\n".join(out) + "\n"


class Cluster:
    """`replicas` processes of `vitals serve` on `database_url` (each with its own port and
    `replica_id`, trusting the loopback HAProxy's X-Forwarded-* headers) behind one
    HAProxy on `port` (a free one unless given).

    Replica `i` (0-based) is `replica(i)`, named `replica-{i+1}` (its `replica_id`,
    its log file) and `replica{i+1}` in HAProxy. `options` go to every `vitals serve`,
    `env` over this process's environment for each replica. `run_dir` receives the
    rendered HAProxy configuration and a log per process, appended over restarts.
    """

    def __init__(
        self,
        database_url: str,
        run_dir: Path,
        *,
        replicas: int = 2,
        port: int | None = None,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        haproxy_config: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.run_dir = run_dir
        self.stats_port = free_port(_HOST)
        self._replicas = [
            vitals_serve(
                "--database-url",
                database_url,
                *options,
                host=_HOST,
                name=f"replica-{n}",
                log_dir=run_dir,
                env={
                    **(env or {}),
                    "VITALS_REPLICA_ID": f"replica-{n}",
                    "VITALS_TRUSTED_PROXIES": f"{_HOST}/32",
                },
            )
            for n in range(1, replicas + 1)
        ]
        template = (haproxy_config or haproxy_config_path()).read_text()
        self.haproxy_config = run_dir / "haproxy.cfg"
        self._rendered = render_haproxy_config(template, replicas)
        port = free_port(_HOST) if port is None else port
        self.haproxy = ServerProcess(
            [HAPROXY, "-db", "-f", str(self.haproxy_config)],
            port=port,
            host=_HOST,
            name="haproxy",
            log_dir=run_dir,
            env={
                "LB_BIND": f"{_HOST}:{port}",
                "LB_STATS": f"{_HOST}:{self.stats_port}",
                **{f"LB_REPLICA{n}": f"{_HOST}:{r.port}" for n, r in enumerate(self._replicas, 1)},
            },
        )

    @property
    def url(self) -> str:
        """HAProxy's: where devices, dashboards and REST clients go."""
        return self.haproxy.url

    @property
    def replicas(self) -> list[ServerProcess]:
        return list(self._replicas)

    def replica(self, i: int) -> ServerProcess:
        """Replica `i` (0-based): its `url`, `port`, `name`, `log_text()`, `running`."""
        return self._replicas[i]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start every replica at once (so they race for the schema, as replicas of a
        real rollout do), then HAProxy; return once HAProxy has every replica up.
        ServerFailed (HaproxyMissing without haproxy) when one does not come up within
        `timeout` s; then nothing is left running."""
        if shutil.which(HAPROXY) is None:
            raise HaproxyMissing()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.haproxy_config.write_text(self._rendered)
        try:
            for replica in self._replicas:
                replica.spawn()
            deadline = time.monotonic() + timeout
            for replica in self._replicas:
                replica.wait_ready(max(deadline - time.monotonic(), 0.1))
            self.haproxy.start(max(deadline - time.monotonic(), 1.0))
            self.wait_up(timeout=max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to every replica at once (frozen ones are thawed first), wait for each
        (SIGKILL after the harness's grace), then HAProxy, so the replicas' closing
        frames reach the clients. Safe to call again."""
        for replica in self._replicas:
            replica.send_signal(signal.SIGCONT)
            replica.send_signal(signal.SIGTERM)
        for replica in self._replicas:
            replica.stop(signalled=True)
        self.haproxy.stop()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to replica `i`. After SIGKILL or SIGTERM, return once it has exited
        (SIGTERM: SIGKILL after the harness's grace); other signals (SIGSTOP, SIGCONT,
        SIGHUP) return at once."""
        replica = self._replicas[i]
        if sig == signal.SIGTERM:
            replica.stop(STOP_GRACE_S)
        elif sig == signal.SIGKILL:
            replica.kill()
        else:
            replica.send_signal(sig)

    def restart(self, i: int, timeout: float = START_TIMEOUT_S) -> None:
        """Replica `i` stopped gracefully if it runs (SIGTERM), started again on the same
        port, and back in HAProxy's rotation; ServerFailed if not within `timeout` s."""
        replica = self._replicas[i]
        deadline = time.monotonic() + timeout
        if replica.running:
            replica.send_signal(signal.SIGCONT)
            replica.stop(STOP_GRACE_S)
        replica.start(max(deadline - time.monotonic(), 1.0))
        self.wait_up([i], timeout=max(deadline - time.monotonic(), 1.0))

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each replica (`replica1` …): "UP", "DOWN", "UP 1/2" (going
        down), "DOWN 1/2" (coming up), "MAINT"; {} while its stats do not answer."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://{_HOST}:{self.stats_port}/stats;csv"
        try:
            with opener.open(url, timeout=1) as r:
                text = r.read().decode()
        except (OSError, http.client.HTTPException):
            return {}
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == DEVICES_BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_up(self, which: Sequence[int] | None = None, timeout: float = 10.0) -> None:
        """Until HAProxy has the replicas `which` (all by default) up; ServerFailed after
        `timeout` s."""
        self._wait_for("UP", which, timeout)

    def wait_down(self, which: Sequence[int], timeout: float = 10.0) -> None:
        """Until HAProxy has taken the replicas `which` out of rotation."""
        self._wait_for("DOWN", which, timeout)

    def _wait_for(self, status: str, which: Sequence[int] | None, timeout: float) -> None:
        indices = range(len(self._replicas)) if which is None else which
        names = [f"replica{i + 1}" for i in indices]
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(states.get(name) == status for name in names):
                return
            if not self.haproxy.running:
                raise ServerFailed(f"haproxy exited; its log ends:\n{self.haproxy.log_tail()}")
            if time.monotonic() >= deadline:
                raise ServerFailed(
                    f"HAProxy did not see {', '.join(names)} {status} within {timeout:.0f} s: "
                    f"{states or 'its stats do not answer'}"
                )
            time.sleep(_POLL_S)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

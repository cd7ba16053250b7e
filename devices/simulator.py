"""Many simulated devices in one process: where their tokens come from, the run itself,
progress while it lasts and the summary at the end.

Devices are provisioned through the admin API (`POST /v1/devices`) or read from a
tokens file; each then streams through a `DeviceClient`, all over one aiohttp session.
Device i's readings come from `random.Random(f"{seed}:{i}")`, so a seed replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import signal
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

import aiohttp
from pydantic import TypeAdapter, ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from devices.backoff import backoff
from devices.client import (
    ClientOptions,
    Clock,
    DeviceClient,
    DeviceCredentials,
    DeviceStats,
    Encoding,
)
from devices.errors import AdminAuthError, ProvisioningError, SimulatorError, TokensFileError
from devices.outbox import Batch
from devices.physiology import Baseline, Physiology, Sampler
from devices.scenarios import Scenario

__all__ = [
    "DEVICES_PATH",
    "AckedLog",
    "DeviceSpec",
    "SimulationConfig",
    "Summary",
    "Totals",
    "build_clients",
    "device_specs",
    "print_summary",
    "provision",
    "read_tokens_file",
    "run_simulation",
    "simulate",
    "write_tokens_file",
]

log = logging.getLogger(__name__)

DEVICES_PATH = "/v1/devices"
_CREDENTIALS: TypeAdapter[DeviceCredentials] = TypeAdapter(DeviceCredentials)
_PROVISIONING_CONCURRENCY = 16  # parallel POSTs: quick for hundreds, gentle on the gateway
_SUFFIX_ATTEMPTS = 5
# sock_read bounds a gateway that accepts the socket but never answers the upgrade;
# aiohttp lifts it once the WebSocket is open (we pass ws_receive=None).
_SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=15)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    url: str
    scenario: Scenario
    admin_token: str | None = None  # used when `credentials` is None
    credentials: tuple[DeviceCredentials, ...] | None = None  # from a tokens file
    devices: int = 10  # how many to provision (ignored with `credentials`)
    rate: float = 1.0
    duration: float | None = None  # seconds from start, provisioning included; None: forever
    seed: int | None = None  # None: a random seed, reported in the summary
    encoding: Encoding = "json"
    ward: str = "icu"
    patient_prefix: str = "p-"
    device_prefix: str = "watch-"
    buffer: int = 600
    acked_log: Path | None = None
    save_tokens: Path | None = None
    drain_timeout: float = 2.0
    progress_interval: float = 5.0  # seconds between plain progress lines (not a TTY)
    cafile: Path | None = None  # trust this CA for https/wss (a private hospital CA)


# -- where devices come from ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    patient_id: str
    ward: str


def device_specs(n: int, *, device_prefix: str, patient_prefix: str, ward: str) -> list[DeviceSpec]:
    """`watch-001`/`p-001` … for devices 1..n (numbered from 1 for people)."""
    width = max(3, len(str(n)))
    return [
        DeviceSpec(f"{device_prefix}{i:0{width}d}", f"{patient_prefix}{i:0{width}d}", ward)
        for i in range(1, n + 1)
    ]


def read_tokens_file(path: Path) -> list[DeviceCredentials]:
    """JSON lines of `{"id", "patient_id", "ward", "token"}`; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokensFileError(f"{path}: cannot read: {exc.strerror}") from None
    found: list[DeviceCredentials] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append(_CREDENTIALS.validate_json(line))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors()
            )
            raise TokensFileError(f"{path}:{lineno}: {problems}") from None
    ids = [c.id for c in found]
    if not found:
        raise TokensFileError(f"{path}: no devices in the file")
    if len(set(ids)) != len(ids):
        raise TokensFileError(f"{path}: a device id appears twice")
    return found


def write_tokens_file(path: Path, credentials: Sequence[DeviceCredentials]) -> None:
    """The format `read_tokens_file` reads, so a later run can reuse the same devices."""
    lines = [c.model_dump_json(include={"id", "patient_id", "ward", "token"}) for c in credentials]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


async def provision(
    session: aiohttp.ClientSession,
    base_url: str,
    admin_token: str,
    specs: Sequence[DeviceSpec],
    stop: asyncio.Event,
) -> list[DeviceCredentials] | None:
    """Create the devices through the admin API; None if `stop` came first.

    An id that exists already (409) is retried as `<id>-<4 hex digits>`, one suffix for
    the whole run, so reruns against the same database just work. An unreachable gateway
    or a 5xx is retried with backoff (it may be restarting); a refused admin token
    raises `AdminAuthError`, any other refusal `ProvisioningError`.
    """
    url = base_url.rstrip("/") + DEVICES_PATH
    headers = {"Authorization": f"Bearer {admin_token}"}
    run_suffix = secrets.token_hex(2)
    if not specs:
        return []
    # The first device alone: one clear warning per retry while the gateway is down,
    # not one per device.
    first = await _create_device(session, url, headers, specs[0], run_suffix, stop)
    if first is None:
        return None
    limit = asyncio.Semaphore(_PROVISIONING_CONCURRENCY)

    async def create(spec: DeviceSpec) -> DeviceCredentials | None:
        async with limit:
            return await _create_device(session, url, headers, spec, run_suffix, stop)

    rest = await asyncio.gather(*(create(s) for s in specs[1:]))
    if any(c is None for c in rest):
        return None
    return [first, *(c for c in rest if c is not None)]


async def _create_device(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    spec: DeviceSpec,
    run_suffix: str,
    stop: asyncio.Event,
) -> DeviceCredentials | None:
    delays = backoff(initial_delay=0.5, max_delay=5.0)
    device_id, conflicts = spec.id, 0
    while not stop.is_set():
        body = {"id": device_id, "patient_id": spec.patient_id, "ward": spec.ward}
        try:
            async with session.post(
                url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            problem = f"gateway unreachable at {url}: {exc or type(exc).__name__}"
        else:
            if status in (200, 201):
                try:
                    return _CREDENTIALS.validate_json(text)
                except ValidationError as exc:
                    raise ProvisioningError(f"POST {url}: unexpected answer: {exc}") from None
            if status in (401, 403):
                raise AdminAuthError(f"the gateway refused the admin token (HTTP {status})")
            if status == 409:
                conflicts += 1
                if conflicts > _SUFFIX_ATTEMPTS:
                    raise ProvisioningError(f"POST {url}: ids like {spec.id!r} all exist")
                suffix = run_suffix if conflicts == 1 else secrets.token_hex(2)
                device_id = f"{spec.id}-{suffix}"
                continue
            if status < 500 and status != 429:
                raise ProvisioningError(f"POST {url} ({device_id}): HTTP {status}: {text:.300}")
            problem = f"POST {url}: HTTP {status}"
        delay = next(delays)
        log.warning("%s; retrying in %.1f s", problem, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return None


# -- the run ----------------------------------------------------------------------------


class AckedLog:
    """One JSON line per batch known to be stored, for end-to-end checks:
    `{"device_id","seq","n","first_ts","last_ts","via"}`, via "ack" or "welcome"
    (buffered batches a reconnect's `last_seq` showed were stored)."""

    def __init__(self, path: Path) -> None:
        # Line-buffered: a killed simulator still leaves every line it had written.
        self._file: IO[str] = path.open("w", encoding="utf-8", buffering=1)

    def __call__(self, device_id: str, batch: Batch, via: str) -> None:
        line = {
            "device_id": device_id,
            "seq": batch.seq,
            "n": batch.n,
            "first_ts": batch.first_ts,
            "last_ts": batch.last_ts,
            "via": via,
        }
        self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self._file.close()


def build_clients(
    session: aiohttp.ClientSession,
    config: SimulationConfig,
    credentials: Sequence[DeviceCredentials],
    clock: Clock,
    seed: int,
    on_acked: AckedLog | None = None,
) -> list[DeviceClient]:
    scenario, n = config.scenario, len(credentials)
    unused = sorted({e.device for e in scenario.episodes if e.device >= n})
    if unused:
        log.warning("scenario %r scripts devices %s, but only %d run", scenario.name, unused, n)
    clients = []
    for i, cred in enumerate(credentials):
        rng = random.Random(f"{seed}:{i}")
        physiology = Physiology(
            Baseline.draw(rng),
            random.Random(rng.getrandbits(64)),
            episodes=scenario.episodes_for(i),
            random_episodes=scenario.random_episodes.policy(),
        )
        sampler = Sampler(physiology, scenario.sampling.model_dump(), rng)
        options = ClientOptions(
            rate=config.rate,
            encoding=config.encoding,
            buffer=config.buffer,
            tick_phase=rng.uniform(0, 1 / config.rate),
            # Spread a big fleet's first connections over up to a second.
            connect_delay=i / n * min(1.0, n / 100),
        )
        clients.append(DeviceClient(session, config.url, cred, sampler, clock, options, on_acked))
    return clients


@dataclass(slots=True)
class Totals:
    devices: int = 0
    connected: int = 0
    rejected: int = 0
    batches_sent: int = 0
    readings_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    pending: int = 0
    dropped: int = 0
    batches_invalid: int = 0
    errors: int = 0
    connect_failures: int = 0
    reconnects: int = 0

    @classmethod
    def of(cls, clients: Sequence[DeviceClient]) -> Totals:
        totals = cls(devices=len(clients))
        # Every counter a device keeps under the same name is summed (booleans count 1).
        counted = {f.name for f in fields(DeviceStats)} & {f.name for f in fields(cls)}
        for client in clients:
            for name in counted:
                setattr(totals, name, getattr(totals, name) + int(getattr(client.stats, name)))
            totals.pending += len(client.outbox)
        return totals


@dataclass(slots=True)
class Summary:
    totals: Totals
    elapsed: float
    seed: int
    started: bool  # False: the gateway never let us provision any device
    rejected: list[str]
    last_problem: str = ""  # one troubled device's latest problem, as a hint


async def run_simulation(
    config: SimulationConfig, stop: asyncio.Event, console: Console
) -> Summary:
    """Provision, stream until `stop` or the end of `config.duration`, close cleanly."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
    timer = loop.call_later(config.duration, stop.set) if config.duration else None
    clients: list[DeviceClient] = []
    tls = ssl.create_default_context(cafile=config.cafile) if config.cafile else None
    # One socket per device, hundreds of them: no pool limit.
    connector = aiohttp.TCPConnector(limit=0, ssl=tls if tls is not None else True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=_SESSION_TIMEOUT) as session,
            contextlib.AsyncExitStack() as stack,
        ):
            credentials: Sequence[DeviceCredentials] | None = config.credentials
            if credentials is None:
                if not config.admin_token:
                    raise SimulatorError("need an admin token or a tokens file")
                specs = device_specs(
                    config.devices,
                    device_prefix=config.device_prefix,
                    patient_prefix=config.patient_prefix,
                    ward=config.ward,
                )
                credentials = await provision(session, config.url, config.admin_token, specs, stop)
                if credentials is None:
                    return Summary(Totals(), loop.time() - started, seed, False, [])
                if config.save_tokens:
                    write_tokens_file(config.save_tokens, credentials)
            acked_log = None
            if config.acked_log:
                acked_log = AckedLog(config.acked_log)
                stack.callback(acked_log.close)
            clients = build_clients(session, config, credentials, Clock.now(), seed, acked_log)
            progress = _Progress(console, clients, config, seed, started, stop)
            async with progress, asyncio.TaskGroup() as group:
                for client in clients:
                    group.create_task(client.run(stop, drain_timeout=config.drain_timeout))
    finally:
        if timer is not None:
            timer.cancel()
    rejected = [c.device_id for c in clients if c.stats.rejected]
    troubled = [c for c in clients if c.stats.last_problem]
    last_problem = (
        f"{troubled[-1].device_id}: {troubled[-1].stats.last_problem}" if troubled else ""
    )
    return Summary(Totals.of(clients), loop.time() - started, seed, True, rejected, last_problem)


class _Progress:
    """A live table on a terminal; otherwise a plain line every few seconds."""

    def __init__(
        self,
        console: Console,
        clients: Sequence[DeviceClient],
        config: SimulationConfig,
        seed: int,
        started: float,
        stop: asyncio.Event,
    ) -> None:
        self._stop = stop
        self._console = console
        self._clients = clients
        self._config = config
        self._seed = seed
        self._started = started
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None

    async def __aenter__(self) -> None:
        if self._console.is_terminal:
            self._live = Live(self._table(), console=self._console, auto_refresh=False)
            self._live.start()
            self._task = asyncio.create_task(self._tick(0.5))
        else:
            self._task = asyncio.create_task(self._tick(self._config.progress_interval))

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._live is not None:
                self._live.update(self._table(), refresh=True)
            else:
                try:
                    self._console.file.write(self._line() + "\n")
                    self._console.file.flush()
                except BrokenPipeError:
                    # Our reader left (`| head -1`): end the run as --duration would;
                    # the summary's write then meets the closed pipe, which the
                    # `vitals` command treats as a quiet end.
                    self._stop.set()
                    return

    def _elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._started

    def _line(self) -> str:
        t = Totals.of(self._clients)
        return (
            f"[{self._elapsed():7.1f}s] devices {t.connected}/{t.devices} connected, "
            f"batches sent {t.batches_sent} acked {t.batches_acked} pending {t.pending}, "
            f"readings sent {t.readings_sent} acked {t.readings_acked}, "
            f"reconnects {t.reconnects}, connect failures {t.connect_failures}, "
            f"errors {t.errors}"
        )

    def _table(self) -> Group:
        t = Totals.of(self._clients)
        title = Text.assemble(
            ("vitals simulate ", "bold"),
            f"{self._config.url}  scenario {self._config.scenario.name}  seed {self._seed}  ",
            (f"{self._elapsed():.0f} s", "cyan"),
        )
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column(justify="right")
        table.add_column(justify="right")
        table.add_row(
            "devices", f"{t.connected}/{t.devices} connected", f"{t.rejected} rejected", ""
        )
        table.add_row(
            "batches", f"{t.batches_sent} sent", f"{t.batches_acked} acked", f"{t.pending} pending"
        )
        table.add_row("readings", f"{t.readings_sent} sent", f"{t.readings_acked} acked", "")
        table.add_row(
            "trouble",
            f"{t.reconnects} reconnects",
            f"{t.connect_failures} connect failures",
            f"{t.errors} errors",
        )
        return Group(title, table)


def print_summary(summary: Summary, console: Console) -> None:
    t = summary.totals
    lines = [
        f"summary: {summary.elapsed:.1f} s, seed {summary.seed}",
        f"  devices: {t.devices} ({t.rejected} rejected)",
        f"  batches: sent {t.batches_sent} (resent {t.batches_resent}), acked {t.batches_acked}, "
        f"unacked at exit {t.pending}, dropped {t.dropped} (buffer full), "
        f"invalid {t.batches_invalid}",
        f"  readings: sent {t.readings_sent}, acked {t.readings_acked}",
        f"  reconnects {t.reconnects}, connect failures {t.connect_failures}, errors {t.errors}",
    ]
    if summary.last_problem:
        lines.append(f"  for example {summary.last_problem}")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def simulate(config: SimulationConfig, console: Console | None = None) -> int:
    """Run the simulation, print the summary and return the process exit code.

    0 after `--duration`; 128 + signal number after Ctrl-C (130) or SIGTERM, summary
    printed first; 1 if the gateway refused the admin token or device tokens, or was
    unreachable for the whole run.
    """
    console = console or Console()
    try:
        return asyncio.run(_main(config, console))
    except SimulatorError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for a clean close
        return 130


async def _main(config: SimulationConfig, console: Console) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()
        for sig in handled:  # a second signal gets the default, immediate behaviour
            loop.remove_signal_handler(sig)

    for sig in handled:
        with contextlib.suppress(NotImplementedError):  # not on Windows: Ctrl-C still works
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        summary = await run_simulation(config, stop, console)
    finally:
        for sig in handled:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
    print_summary(summary, console)
    if received:
        return 128 + received[0]
    if not summary.started:
        _error(f"gateway at {config.url} unreachable for the whole run")
        return 1
    if summary.rejected:
        names = ", ".join(summary.rejected[:5]) + (" …" if len(summary.rejected) > 5 else "")
        _error(f"the gateway refused the token of {len(summary.rejected)} device(s): {names}")
        return 1
    return 0


def _error(message: str) -> None:
    print(f"vitals simulate: error: {message}", file=sys.stderr, flush=True)

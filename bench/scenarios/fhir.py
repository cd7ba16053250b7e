"""FHIR Bulk Data export: its rate, the gateway's memory while it streams, and what it
costs the ward's acks.

The database is filled with `fhir_readings` readings (plain sqlite3 inserts: setup, not
measured) across the ward's patients, blood pressure in pairs. Then, on one gateway:
(1) an admin's export alone: readings/s from kick-off to the last NDJSON line, and the
gateway's RSS growth (peak during the export minus before its kick-off); (2) the ward
load alone; (3) the ward load again while exports run back to back, the last one cut
when the load ends. The ack p99 of (3) over that of (2) is what an export costs ingest.
The gateway runs with its shipped defaults, so exports are unpaced unless the
environment sets a pace (`VITALS_FHIR_EXPORT_READINGS_PER_S=2000`); a paced export's
rate under the ward counts only what arrived while the load ran."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.config import BenchConfig
from bench.processes import BenchError
from bench.scenarios.common import RunResult, gateway, stop_notes
from bench.scenarios.ward import WardRun, drive
from bench.stats import latency_summary

__all__ = ["ExportPass", "export_once", "prefill", "run"]

# Six metrics a round, blood pressure as a pair at one instant: what a monitor sends.
_ROUND = ("heart_rate", "spo2", "resp_rate", "temperature", "systolic_bp", "diastolic_bp")
_VALUES = {
    "heart_rate": 72.0, "spo2": 97.0, "resp_rate": 14.0, "temperature": 36.8,
    "systolic_bp": 120.0, "diastolic_bp": 80.0,
}  # fmt: skip
_INSERT_ROWS = 100_000


def prefill(db_path: Path, devices: list[list[str]], total: int) -> None:
    """`total` readings spread round-robin over `devices`, timed two days ago (outside
    every alerting window), committed in blocks."""
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        start_us = int((time.time() - 2 * 86_400) * 1_000_000)
        rows: list[tuple[str, str, str, int, float, int, int]] = []
        for i in range(total):
            device_id, patient_id, _ = devices[(i // len(_ROUND)) % len(devices)]
            metric = _ROUND[i % len(_ROUND)]
            # Paired halves share the instant; each round is one second later.
            ts_us = start_us + (i // (len(_ROUND) * len(devices))) * 1_000_000
            rows.append((device_id, patient_id, metric, ts_us, _VALUES[metric], ts_us, 0))
            if len(rows) == _INSERT_ROWS or i == total - 1:
                with conn:
                    conn.executemany(
                        "INSERT INTO readings (device_id, patient_id, metric, ts_us, value,"
                        " received_us, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                rows.clear()
        # Into the database file now: left in the WAL, the gateway's checkpoints would
        # copy it during the first ward load (its ack p99 was 9.9 s in a run so).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class RssPeak:
    """The highest RSS of a process, sampled every 50 ms in a thread while entered."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class ExportPass:
    resources: int  # NDJSON lines of the Observation files
    readings: int  # the readings they hold (the manifest's counts)
    seconds: float  # kick-off to last line
    nbytes: int


def _request(
    base: str, method: str, path: str, token: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}", **(headers or {})})
    return conn.getresponse()


def export_once(base: str, token: str, stop: threading.Event | None = None) -> ExportPass:
    """One admin export of Observations: kick-off, poll to the manifest, every file
    downloaded and its lines counted (read in 1 MiB chunks, never held whole). Once
    `stop` is set the download ends where it is: the pass then counts the lines it
    received, in the time until then (`readings` stays the manifest's)."""
    started = time.monotonic()
    kick = _request(
        base, "GET", "/v1/fhir/Patient/$export?_type=Observation", token,
        {"Prefer": "respond-async"},
    )  # fmt: skip
    kick.read()
    if kick.status != 202:
        raise BenchError(f"export kick-off answered {kick.status}")
    status_path = urlsplit(kick.headers["Content-Location"]).path
    while True:
        resp = _request(base, "GET", status_path, token)
        body = resp.read()
        if resp.status == 200:
            manifest = json.loads(body)
            break
        if resp.status != 202:
            raise BenchError(f"export status answered {resp.status}: {body[:200]!r}")
        time.sleep(0.1)
    lines = nbytes = 0
    for item in manifest["output"]:
        resp = _request(base, "GET", urlsplit(item["url"]).path, token)
        if resp.status != 200:
            raise BenchError(f"export file answered {resp.status}")
        while not (stop and stop.is_set()) and (chunk := resp.read(1 << 20)):
            lines += chunk.count(b"\n")
            nbytes += len(chunk)
        resp.close()
    seconds = time.monotonic() - started
    _request(base, "DELETE", status_path, token).read()
    readings = sum(item["readings"] for item in manifest["output"])
    return ExportPass(lines, readings, seconds, nbytes)


def run(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    del rep
    with gateway(cfg, workdir, cfg.ward_devices, rules=True) as (server, prov):
        prefill(prov.db_path, prov.devices, cfg.fhir_readings)
        token = prov.dashboard_token  # an admin's
        before = rss_kib(server.pid)
        with RssPeak(server.pid) as rss:
            alone = export_once(server.url, token)
        for phase in ("quiet", "busy"):
            (workdir / phase).mkdir(exist_ok=True)
        quiet = drive(cfg, workdir / "quiet", server, prov.devices, token)
        passes: list[ExportPass] = []
        stop = threading.Event()

        def keep_exporting() -> None:
            # Each pass is cut when the ward load ends: a paced export of the whole
            # fill outlasts the load, and its rate after it would not be "under" it.
            while not stop.is_set():
                passes.append(export_once(server.url, token, stop))

        exporter = threading.Thread(target=keep_exporting, daemon=True)
        exporter.start()
        try:
            busy = drive(cfg, workdir / "busy", server, prov.devices, token)
        finally:
            stop.set()
            exporter.join(timeout=600)
    quiet_acks = latency_summary([v for r in quiet.results for v in r["latencies_ms"]])
    busy_acks = latency_summary([v for r in busy.results for v in r["latencies_ms"]])
    ratio = None
    if quiet_acks["p99"] and busy_acks["p99"] is not None:
        ratio = busy_acks["p99"] / quiet_acks["p99"]
    batch = cfg.ward_batch_size

    def acked_per_s(ward: WardRun) -> float:
        return sum(r["acked_in_window"] for r in ward.results) * batch / cfg.duration_s

    busy_rate = None
    if passes:
        # Lines received over the passes' time, as readings at the alone pass's ratio
        # (the fill's: six readings make five Observations); a cut pass has no count.
        per_line = alone.readings / alone.resources
        busy_rate = sum(p.resources for p in passes) * per_line / sum(p.seconds for p in passes)
    result = RunResult(
        {
            "export_readings_per_s": alone.readings / alone.seconds,
            "export_mib_per_s": alone.nbytes / alone.seconds / 2**20,
            "export_rss_growth_mib": (rss.peak_kib - before) / 1024,
            "ward_acked_readings_per_s": acked_per_s(quiet),
            "ward_acked_exporting_readings_per_s": acked_per_s(busy),
            "ward_ack_p99_ms": quiet_acks["p99"],
            "ward_ack_p99_exporting_ms": busy_acks["p99"],
            "ack_p99_ratio": ratio,
            "export_under_ward_readings_per_s": busy_rate,
        },
        {
            "readings_exported": alone.readings,
            "observations_exported": alone.resources,
            "ndjson_bytes": alone.nbytes,
            "export_seconds": round(alone.seconds, 2),
            "exports_during_ward": len(passes),
        },
    )
    if alone.readings < cfg.fhir_readings:
        result.notes.append(f"exported {alone.readings} readings, fewer than the fill")
    result.notes += stop_notes(server)
    return result

"""Alerting's clinical inputs from the database: patients' own settings (SpO2 scale,
overrides of the ward's rules) and NEWS2's stored inputs (clinicians' observations, the
freshest vitals), put into the alert engine for the alert service (services/alerting.py).

Settings (the engine's `set_settings`): every patient's are read at start, an adopted
patient's again at its adoption, and a patient's when they change here
(`settings_changed`, after the API stored them) or on another replica (CHANNEL_SETTINGS;
every patient's again when the listener reconnects, since a notification sent meanwhile
is lost).

NEWS2: the engine scores from the readings it evaluates; this gives it what is stored
besides: every patient's inputs at restore, the adopted patients' at adoption (`seed`),
and a clinician's new observation on the patient's owner (`observe`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gateway.core.alert_engine import AlertEngine, Transition
from gateway.core.patient_rules import DEFAULT_SETTINGS
from gateway.storage.notify import CHANNEL_SETTINGS, Notifications
from gateway.storage.patient_settings import PatientSettingsStore
from gateway.storage.patients import PatientStore

__all__ = ["ClinicalInputs"]

# The alert service's logger: its lines read as they did before this module was split
# from it, so filters and searches by logger name still find them.
log = logging.getLogger("gateway.services.alerting")


class ClinicalInputs:
    """What the alert service needs of it: the engine, and where the transitions it
    causes go (`enqueue`, or `enqueue_and_wait` for the caller to learn they were
    stored); alert ids for what a score may raise (`reserve_ids`); and `background`,
    which runs work started from a notification and cancels it at shutdown."""

    def __init__(
        self,
        engine: AlertEngine,
        *,
        settings: PatientSettingsStore | None,
        patients: PatientStore | None,
        news2_window_s: float,
        enqueue: Callable[[list[Transition]], None],
        enqueue_and_wait: Callable[[list[Transition]], Awaitable[str]],
        reserve_ids: Callable[[int], Awaitable[None]],
        background: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._engine = engine
        # Where patients' own settings are read from (None: ward rules for everyone).
        self._settings = settings
        # Where NEWS2's stored inputs are read from (None: the engine's own only).
        self._patients = patients
        self._news2_window_s = news2_window_s
        self._enqueue = enqueue
        self._enqueue_and_wait = enqueue_and_wait
        self._reserve_ids = reserve_ids
        self._background = background

    def listen(self, wakeups: Notifications) -> None:
        """Hear settings stored on other replicas (CHANNEL_SETTINGS)."""
        if self._settings is not None:
            wakeups.listen(CHANNEL_SETTINGS, self._settings_heard, self._settings_missed)

    async def load_settings(self, patient_ids: list[str] | None = None) -> list[Transition]:
        """Put the stored settings of these patients (all: None) in force; the
        transitions that caused, for the caller to queue."""
        if self._settings is None:
            return []
        found = await self._settings.every(patient_ids)
        now = time.time()
        transitions: list[Transition] = []
        for stored in found:
            transitions += self._engine.set_settings(stored.patient_id, stored.settings, now)
        if patient_ids is not None:
            for p in set(patient_ids) - {s.patient_id for s in found}:
                transitions += self._engine.set_settings(p, DEFAULT_SETTINGS, now)
        return transitions

    async def settings_changed(self, patient_id: str) -> None:
        """See `AlertService.settings_changed`."""
        if self._settings is None:
            return
        stored = await self._settings.get(patient_id)
        settings = DEFAULT_SETTINGS if stored is None else stored.settings
        transitions = self._engine.set_settings(patient_id, settings, time.time())
        if transitions:
            await self._enqueue_and_wait(transitions)

    def _settings_heard(self, payload: str) -> None:
        """Another replica stored a patient's settings: read and apply them here."""
        self._background(self._settings_changed_quietly(payload), "settings-changed")

    def _settings_missed(self) -> None:
        """The listener (re)connected: a change may have been missed, read them all."""
        self._background(self._reload_settings_quietly(), "settings-reload")

    async def _settings_changed_quietly(self, patient_id: str) -> None:
        try:
            await self.settings_changed(patient_id)
        except Exception as e:
            log.warning("settings of %s not applied yet: %s", patient_id, e)

    async def _reload_settings_quietly(self) -> None:
        try:
            self._enqueue(await self.load_settings())
        except Exception as e:
            log.warning("patients' settings not reloaded: %s", e)

    async def observe(self, patient_id: str) -> None:
        """Score the patient (evaluated here) again from its stored latest entries."""
        if self._patients is None:
            return
        since_us = int((time.time() - self._news2_window_s) * 1e6)
        for found in await self._patients.news2_inputs(since_us, patient_id=patient_id):
            await self._reserve_ids(1)
            self._enqueue(
                self._engine.observe(
                    patient_id,
                    time.time(),
                    consciousness=found.consciousness,
                    oxygen=found.oxygen,
                )
            )

    async def seed(
        self,
        *,
        patient_ids: list[str] | None = None,
        everyone: bool = False,
        devices: dict[str, str] | None = None,
    ) -> None:
        """Give the engine the stored NEWS2 inputs of these patients (scored at its
        next check); `devices`: patient id -> a device of theirs to raise alerts on."""
        if self._patients is None:
            return
        since_us = int((time.time() - self._news2_window_s) * 1e6)
        found = await self._patients.news2_inputs(
            since_us, patient_ids=patient_ids, everyone=everyone
        )
        for inputs in found:
            self._engine.seed(
                inputs.patient_id,
                vitals=inputs.vitals,
                consciousness=inputs.consciousness,
                oxygen=inputs.oxygen,
                device_id=(devices or {}).get(inputs.patient_id),
            )

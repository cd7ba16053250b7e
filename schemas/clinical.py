"""Clinical codes on the wire: the ACVPU consciousness scale and the NEWS2 bands."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Consciousness", "News2Band"]


class Consciousness(StrEnum):
    """ACVPU, as a clinician enters it (NEWS2 chart, Royal College of Physicians 2017)."""

    ALERT = "A"
    CONFUSION = "C"  # new confusion
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class News2Band(StrEnum):
    """The clinical risk a NEWS2 total stands for, lowest first."""

    LOW = "low"
    LOW_MEDIUM = "low-medium"  # total 0-4 with a 3 in a single parameter
    MEDIUM = "medium"
    HIGH = "high"

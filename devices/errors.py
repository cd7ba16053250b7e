"""Exceptions of the device package, all caught by the CLI and turned into an exit code.

SimulatorError
├── ScenarioError        scenario file missing or invalid (exit 2)
├── TokensFileError      --tokens file missing or malformed (exit 2)
├── AdminAuthError       the gateway refused the admin token (exit 1)
└── ProvisioningError    the gateway refused to create a device (exit 1)
"""

from __future__ import annotations

__all__ = [
    "AdminAuthError",
    "ProvisioningError",
    "ScenarioError",
    "SimulatorError",
    "TokensFileError",
]


class SimulatorError(Exception):
    """Root of the simulator's errors: the message is meant for the person at the terminal."""


class ScenarioError(SimulatorError):
    pass


class TokensFileError(SimulatorError):
    pass


class AdminAuthError(SimulatorError):
    pass


class ProvisioningError(SimulatorError):
    pass

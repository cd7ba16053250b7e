from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import GatewayProcess


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A `vitals serve` process on a free port with a fresh database (not started yet)."""
    gw = GatewayProcess(db=tmp_path / "vitals.db", log_dir=tmp_path)
    try:
        yield gw
    finally:
        gw.close()

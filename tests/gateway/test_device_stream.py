from __future__ import annotations

from tests.conftest import Gateway


def test_x(gateway: Gateway) -> None:
    """x."""
    assert gateway.admin_token

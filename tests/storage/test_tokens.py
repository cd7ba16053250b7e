"""Tokens are safe to pass on a command line."""

from __future__ import annotations

from gateway.storage.accounts import new_token


def test_a_token_never_starts_with_a_dash() -> None:
    """`--token T` with T starting with "-" reads as a missing value; one token in 64
    used to (this made e2e tests and `make demo` fail now and then)."""
    tokens = [new_token() for _ in range(5000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == 43 for t in tokens)  # 256 bits, base64url

"""The repository itself: what a fresh clone holds."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    try:
        done = subprocess.run(
            [git, *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except subprocess.CalledProcessError as e:
        pytest.skip(f"not a git checkout: {e.stderr.strip()}")
    return done.stdout


def test_gitignore_lists_no_tracked_file() -> None:
    """No tracked file matches .gitignore: such a pattern hides new files beside it."""
    _git("rev-parse", "--git-dir")
    assert _git("ls-files", "--cached", "--ignored", "--exclude-standard") == ""


def test_license_file_is_the_license_pyproject_declares() -> None:
    """pyproject says Apache-2.0 and LICENSE holds that licence's text."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text

"""The README stays a front door: short, and its set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.exists(), reason="outside the source tree")


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_no_developer_paths_where_users_read():
    # real data comes from load_movielens(..., download=True) or the user's own file
    pages = [README, *sorted((ROOT / "docs").glob("*.rst"))]
    for page in pages:
        assert "shared/data" not in page.read_text(encoding="utf-8"), page.name


def test_readme_setup_commands_match_ci():
    text = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    setup = re.findall(r"^python3 -m venv \.venv && (.*)$", text, flags=re.M)
    assert len(setup) == 2, "two one-line set-up commands: the main job and the tests"
    for line in setup:
        steps = line.split(" && ")
        assert steps[0] == ".venv/bin/pip install torch==2.13.0"
        assert steps[1] == '.venv/bin/pip install -e ".[test]"'
        assert "pip install -q torch==2.13.0" in ci and 'pip install -q -e ".[test]"' in ci
    assert setup[0].endswith(".venv/bin/deepmc demo")
    assert setup[1].endswith(".venv/bin/python -m pytest")
    assert ".venv/bin/python -m pytest" in ci

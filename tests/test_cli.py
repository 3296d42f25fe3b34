"""The README's main job: ``deepmc demo`` prints recovery error and time of both networks."""

from __future__ import annotations

import re

from deepmc.__main__ import main


def test_demo_prints_both_networks_recovering_problem_a(capsys):
    assert main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = dict(
        (m.group(1), (int(m.group(2)), float(m.group(3)), float(m.group(4))))
        for m in re.finditer(
            r"^(compressed|full-width)\s+(\d+)\s+([\d.]+)\s+([\d.e+-]+)$", out, flags=re.M
        )
    )
    assert set(rows) == {"compressed", "full-width"}
    for iterations, seconds, error in rows.values():
        assert iterations > 0 and seconds > 0
        assert error <= 1e-4
    assert "speed-up of compressed over full width" in out

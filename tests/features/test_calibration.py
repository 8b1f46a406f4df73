"""The simulator's calibration table in docs/ is what the code produces today, and it says which targets hold."""

from __future__ import annotations

from features.calibration import (
    DOCUMENT,
    TARGETS,
    calibration_markdown,
    real_statistics,
    simulated_statistics,
)


def test_calibration_document_is_current():
    real, simulated = real_statistics(), simulated_statistics()
    assert set(real) == set(simulated) == {t.name for t in TARGETS}
    expected = calibration_markdown(real, simulated)
    assert DOCUMENT.read_text() == expected, (
        "docs/calibration.md is stale: run `python -m features.calibration --write docs/calibration.md`")
    # the real recordings themselves sit inside the bands written from them (a band that excludes its own
    # source would be a typo, not a target)
    for target in TARGETS:
        assert target.low <= real[target.name] <= target.high, target

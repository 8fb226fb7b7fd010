"""The layout's own rules that import-linter cannot see."""

from __future__ import annotations

from pathlib import Path

from coordinator.collect import COLLECTORS
from farm.jobs.kinds import KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_every_run_kind_has_a_job_and_a_collector() -> None:
    from workers.render import JOBS

    assert set(JOBS) == set(COLLECTORS) == set(KINDS)


def test_the_repository_stands_alone() -> None:
    """No code or doc points at a design document the repository does not have."""
    for path in [*ROOT.glob("*/**/*.py"), *ROOT.glob("*.md"), *ROOT.glob("docs/*.md")]:
        if ".venv" in path.parts or path.name == "test_layout.py":
            continue
        assert "DESIGN.md" not in path.read_text(), path

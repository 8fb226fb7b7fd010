"""A full disk, for real: the data folder on a small tmpfs, filled while a run works.

The run fails (or pauses) with "disk full in DIR (about X more needed)", nothing
half-written is left or counted, read-only commands still answer, and once space is freed
``farm resume`` finishes with the same rows and audio bytes as ``farm generate``. Mounting
needs root (CI runs as root); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.farm_helpers import (
    FAULT_N,
    FAULT_SPEC,
    assert_same_rows,
    farm,
    generated_reference,
    run_id_of,
    start_farm,
)

pytestmark = pytest.mark.slow

N = FAULT_N
SPEC = FAULT_SPEC


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return generated_reference(tmp_path_factory.mktemp("ref"), SPEC, N)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs (the run needs about 20 MB at its peak)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        why = f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root"
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` up, leaving about ``leave`` bytes free."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    chunk = b"\xff" * 65536
    try:
        while True:
            os.write(fd, chunk)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def _status(cwd: Path, data: Path, run_id: str) -> dict[str, Any]:
    out = farm(cwd, "status", run_id, "--json", "--data-dir", str(data), timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return dict(json.loads(out.stdout))


def _until(cwd: Path, data: Path, run_id: str, ok: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok(_status(cwd, data, run_id)):
            return
        time.sleep(0.2)
    raise AssertionError("the run never got there")


def _resume_and_check(
    cwd: Path, data: Path, run_id: str, filler: Path, ref: dict[str, np.ndarray]
) -> None:
    # Read-only commands answer on the full disk, without a traceback.
    for args in (["status"], ["status", run_id]):
        out = farm(cwd, *args, "--data-dir", str(data), timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert not (data / f"tier1_{N}.h5").exists()  # nothing half-written under the name
    filler.unlink()
    out = farm(cwd, "resume", run_id, "--workers", "2", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    # A collector killed while writing (the run failed elsewhere first) left a temporary
    # file at most; the resumed collector removed it.
    assert not list(data.rglob("*.tmp")), list(data.rglob("*.tmp"))
    path = data / f"tier1_{N}.h5"
    assert_same_rows(path, ref, N)
    assert farm(cwd, "verify", str(path)).returncode == 0


def test_disk_full_while_collecting(
    tmp_path: Path, disk: Path, reference: dict[str, np.ndarray]
) -> None:
    data = disk / "data"
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2",
                      "--data-dir", str(data), "--inject-collect-delay", "3")  # fmt: skip
    run_id = run_id_of(proc)
    _until(tmp_path, data, run_id, lambda st: st["state"] == "collecting")
    filler = fill(disk, leave=512 * 1024)  # room for the ledger, not for the file
    _, err = proc.communicate(timeout=120)
    print(err.strip().splitlines()[-1])
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert "disk full in" in last and "more needed" in last and "Traceback" not in err, err
    assert f"farm resume {run_id}" in last
    assert not (data / f"tier1_{N}.h5").exists()
    st = _status(tmp_path, data, run_id)
    assert st["state"] == "failed" and "disk full" in st["error"], st
    _resume_and_check(tmp_path, data, run_id, filler, reference)


def test_disk_filled_mid_run(tmp_path: Path, disk: Path, reference: dict[str, np.ndarray]) -> None:
    data = disk / "data"
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2",
                      "--data-dir", str(data))  # fmt: skip
    run_id = run_id_of(proc)
    _until(tmp_path, data, run_id, lambda st: st["jobs_done"] >= 1)
    filler = fill(disk, leave=256 * 1024)
    _, err = proc.communicate(timeout=120)
    print(err.strip().splitlines()[-1])
    assert proc.returncode == 1, err
    assert "disk full" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    _resume_and_check(tmp_path, data, run_id, filler, reference)

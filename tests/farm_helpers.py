"""Helpers for farm tests: run the real CLI in subprocesses, follow runs, find processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

#: A small tier-2 spec (short notes) whose rows tests compare across runs.
SPEC = [
    "--tier",
    "2",
    "--batch-size",
    "4",
    "--notes",
    "48,60",
    "--note-duration",
    "0.3",
    "--render-duration",
    "0.5",
    "--seed",
    "7",
]

#: The tier-1 spec and row count of the fault tests on their own brokers and disks.
FAULT_SPEC = ["--tier", "1", "--batch-size", "4", "--notes", "48,60", "--seed", "7"]
FAULT_SPEC += ["--note-duration", "0.3", "--render-duration", "0.5"]
FAULT_N = 40

#: Bound on any farm command in a test (a hang fails instead of blocking CI).
COMMAND_TIMEOUT_S = 240


def farm(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``farm ARGS`` (the real CLI) in ``cwd``; data goes to ``cwd/data``."""
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        cwd=cwd,
        env=env or farm_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def farm_env(**extra: str) -> dict[str, str]:
    """The environment without any FARM_* of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(extra)
    return env


def start_farm(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``farm ARGS`` without waiting (stderr captured for the run id)."""
    return subprocess.Popen(
        [sys.executable, "-m", "farm.cli", *args],
        cwd=cwd,
        env=env or farm_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_id_of(proc: subprocess.Popen[str]) -> str:
    """Read the ``run ID: ...`` line a submit prints first on stderr."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("run "), line
    return line.split()[1].rstrip(":")


def status(cwd: Path, run_id: str) -> dict[str, Any]:
    """``farm status RUN_ID --json``."""
    out = farm(cwd, "status", run_id, "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def wait_for(cwd: Path, run_id: str, jobs_done: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll the run until ``jobs_done`` jobs are done (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = status(cwd, run_id)
        if st["jobs_done"] >= jobs_done or st["state"] != "running":
            return st
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {jobs_done} done jobs")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """The pids still alive after waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def interrupt(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str]:
    """Send ``sig`` and wait; (exit code, stderr)."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def columns(path: Path) -> dict[str, np.ndarray]:
    """The row identity and audio columns of a dataset."""
    with h5py.File(path, "r") as f:
        return {
            "preset_hash": f["metadata/preset_hash"][:],
            "midi_note": f["metadata/midi_note"][:],
            "job": f["metadata/job"][:],
            "preset": f["metadata/preset"][:],
            "audio": f["audio/waveforms"][:],
        }


def keys(path: Path) -> list[tuple[int, int, int]]:
    """Every row's (job, preset, note)."""
    c = columns(path)
    return list(zip(c["job"].tolist(), c["preset"].tolist(), c["midi_note"].tolist(), strict=True))


def generated_reference(cwd: Path, spec: list[str], n: int) -> dict[str, np.ndarray]:
    """The rows ``farm generate`` makes for ``spec`` (one process, no faults): what a
    faulty farm run of the same spec must equal, labels and audio bytes."""
    out = farm(cwd, "generate", *spec, "-n", str(n), "-o", "ref.h5")
    assert out.returncode == 0, out.stderr
    return columns(cwd / "data" / "ref.h5")


def assert_same_rows(path: Path, ref: dict[str, np.ndarray], n: int) -> None:
    """Exactly ``n`` rows, no duplicate keys, the reference's labels and audio bytes."""
    got = columns(path)
    k = keys(path)
    assert len(k) == len(set(k)) == n
    for name in ("preset_hash", "midi_note", "job", "preset", "audio"):
        assert np.array_equal(got[name], ref[name]), name

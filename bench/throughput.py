"""The farm's efficiency: an embedded ``farm submit`` against bare loops rendering the same
rows, all measured in this one run (the machine is shared and noisy: read the ratios).

* **farm**: ``farm submit --tier T -n N --workers K`` (embedded Redis, K Celery worker
  processes, shards, collector), wall time of the whole command;
* **bare clean**: K plain processes rendering the same presets (every preset up to the
  farm's file's last one), taking one preset at a time from a shared counter (so they end
  within one preset of each other: an ideal schedule), with the same clean-state engine
  and validator: no queue, no storage;
* **bare stored**: bare clean, and each process writes its rows as a worker does (appended
  to its shard with their checksums and flushed every batch of presets): the farm's storage
  without its queue, ledger and collector;
* **bare forked**: the same with the resident renderer off (a fork per note, as before it);
* **bare reused**: the same K-process loop with one reused Synth per process (faster, but a
  reused Synth leaks state between renders: its labels are wrong for a few percent of rows).

Rows/s counts the farm's rows for all of them (the same jobs). Prints farm / bare clean
(the farm's own overhead), farm / bare reused (everything clean state and the farm cost)
and bare clean / bare reused (the price of clean state).

    python bench/throughput.py [--n 600] [--tier 2] [--workers 2] [--batch-size 16]
        [--render-duration 2.0 --note-duration 1.5] [--loops clean,stored,forked,reused]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py

from farm.config import RunSpec


def _loop(
    spec_json: str,
    method: str,
    presets: int,
    counter: object,
    lock: object,
    out: object,
    store_dir: str = "",
) -> None:
    """One bare process: take presets from the shared counter until ``presets``; puts its
    accepted rows on ``out``."""
    from farm.config import RunSpec
    from farm.jobs.plan import sample_presets
    from farm.jobs.render import render_job
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params
    from farm.render.engine import RenderEngine

    spec = RunSpec.from_json(spec_json)
    tp = tier_params(get_registry(), spec.tier)
    engine = RenderEngine(tp, spec.render, resident=method in ("clean", "stored"))
    reuse = _Reused(engine) if method == "reused" else None
    store = _Stored(spec, tp, store_dir) if method == "stored" else None
    rows = 0
    while True:
        with lock:  # type: ignore[attr-defined]
            g = counter.value  # type: ignore[attr-defined]
            counter.value += 1  # type: ignore[attr-defined]
        if g >= presets:
            if store is not None:
                store.write()
            out.put(rows)  # type: ignore[attr-defined]
            return
        labels = sample_presets(spec, tp, [g])
        if reuse is None:
            kept = render_job(engine, spec, 0, labels, first=g).rows
            rows += len(kept)
            if store is not None:
                store.add(kept)
        else:
            rows += reuse.job(spec, labels)


class _Stored:
    """The farm's storage of a job's rows without the farm: rows appended to this
    process's shard (checksums made, flushed) every ``batch_size`` presets, as a worker
    does after each job."""

    def __init__(self, spec: Any, tp: Any, folder: str) -> None:
        self.spec, self.tp = spec, tp
        self.path = Path(folder) / f"bare-{os.getpid()}.h5"
        self.rows: list[Any] = []
        self.presets = 0

    def add(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)
        self.presets += 1
        if self.presets % self.spec.batch_size == 0:
            self.write()

    def write(self) -> None:
        from farm.params.registry import get_registry
        from farm.storage.shard import ShardWriter

        if not self.rows:
            return
        fingerprint = get_registry().fingerprint
        w = ShardWriter(self.path, self.spec, self.tp, fingerprint, atomic=False, append=True)
        w.append(self.rows)
        w.flush()
        w.close()
        self.rows = []


class _Reused:
    """Renders with the engine's Synth itself, reused for every preset and note."""

    def __init__(self, engine: object) -> None:
        self.synth = engine.synth  # type: ignore[attr-defined]
        self.applier = engine.applier  # type: ignore[attr-defined]

    def job(self, spec: object, labels: Sequence[object]) -> int:
        from farm.render.validate import validate

        r = spec.render  # type: ignore[attr-defined]
        shape = (2, r.samples)
        rows = 0
        for label in labels:
            self.synth.load_init_preset()
            self.applier.apply(label)
            for note in r.notes:
                audio = self.synth.render(note, r.velocity, r.note_duration, r.render_duration)
                v = validate(audio, spec.validation, shape, r.sample_rate)  # type: ignore[attr-defined]
                rows += v.reason is None
        return rows


def bare(spec_json: str, method: str, presets: int, workers: int) -> tuple[float, int]:
    """Wall time (process start included) and accepted rows of presets 0 to
    ``presets - 1`` on ``workers`` fresh processes."""
    ctx = mp.get_context("spawn")  # fresh processes, as a worker starts
    counter, lock, out = ctx.Value("i", 0), ctx.Lock(), ctx.Queue()
    store = tempfile.TemporaryDirectory(dir=".")  # on the disk a data folder would be
    t0 = time.perf_counter()
    procs = [
        ctx.Process(target=_loop, args=(spec_json, method, presets, counter, lock, out, store.name))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results: list[int] = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a bare loop process failed (see above)") from None
    rows = sum(results)
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    store.cleanup()
    return seconds, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the farm's (16)")
    ap.add_argument("--render-duration", type=float, default=2.0)
    ap.add_argument("--note-duration", type=float, default=1.5)
    ap.add_argument(
        "--loops",
        default="clean,forked,reused",
        help="bare loops to run, comma-separated (clean, stored, forked, reused)",
    )
    a = ap.parse_args()
    if not a.loops or not set(a.loops.split(",")) <= {"clean", "stored", "forked", "reused"}:
        raise SystemExit("--loops: a comma-separated list of clean, stored, forked, reused")
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        cmd = [
            *(sys.executable, "-m", "farm.cli", "submit"),
            *("--tier", str(a.tier), "-n", str(a.n), "--workers", str(a.workers)),
            *(("--batch-size", str(a.batch_size)) if a.batch_size else ()),
            *("-o", "bench.h5"),
            *("--render-duration", str(a.render_duration)),
            *("--note-duration", str(a.note_duration)),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        t_farm = time.perf_counter() - t0
        with h5py.File(Path(tmp) / "data" / "bench.h5", "r") as f:
            spec = RunSpec.from_json(str(f.attrs["run_spec"]))
            # The stored key is (block, index in block): the global preset index. The bare
            # loops render every preset up to the file's last one, one at a time.
            last = int(f["metadata/job"][-1]) * spec.sampling.block + int(f["metadata/preset"][-1])
            renders = int(f.attrs["renders"])
        spec_json = spec.model_dump_json()
        batch = spec.batch_size
    loops = {m: bare(spec_json, m, last + 1, a.workers) for m in a.loops.split(",")}
    print(
        f"{last + 1} presets; the farm: jobs of up to {batch} presets, {renders} renders; "
        f"n={a.n}, tier {a.tier}, {a.workers} processes, {a.render_duration:g} s renders"
    )
    print(f"farm submit (embedded)   {t_farm:7.1f} s  {a.n / t_farm:6.2f} rows/s")
    names = {
        "clean": ("bare loop, clean state ", "valid rows in those presets"),
        "stored": ("bare clean + shards     ", "valid rows, written as a worker does"),
        "forked": ("bare loop, fork a note ", "valid rows in those presets"),
        "reused": ("bare loop, reused Synth", "valid rows: leaked state changes which pass"),
    }
    for m, (t, rows) in loops.items():
        name, what = names[m]
        print(f"{name}  {t:7.1f} s  {a.n / t:6.2f} rows/s ({rows} {what})")
    for m in ("clean", "stored", "reused"):
        if m in loops:
            print(f"farm / bare {m:6} throughput       = {loops[m][0] / t_farm:.3f}")
    if "clean" in loops and "stored" in loops:
        t_clean, t_stored = loops["clean"][0], loops["stored"][0]
        print(f"bare stored / bare clean throughput = {t_clean / t_stored:.3f} (the shards' cost)")
    if "clean" in loops and "reused" in loops:
        t_clean, t_reused = loops["clean"][0], loops["reused"][0]
        forked = (
            f"; a fork per note: {loops['forked'][0] / t_reused - 1:+.1%}"
            if "forked" in loops
            else ""
        )
        print(
            f"bare clean / bare reused throughput = {t_reused / t_clean:.3f} "
            f"(price of clean state {t_clean / t_reused - 1:+.1%}{forked})"
        )


if __name__ == "__main__":
    main()

"""The body of ``farm.collect`` (and of ``farm collect``): the run's shards into one file.

Idempotent: run again, it rebuilds the same file from kept shards, or reports the file it
already made. When rows the ledger counts are missing from the shards (a worker killed
while writing), it sends those jobs again and puts the run back to ``running``; the run
then triggers the collector again when they are done.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coordinator.broker import Sender
from coordinator.ledger import CANCELLED, COLLECTING, DONE, FAILED, RUNNING, Ledger
from farm.config import RunSpec
from farm.disk import disk_full, estimate_bytes, is_disk_full
from farm.errors import CollectError, FarmError, RunStateError
from farm.jobs.kinds import DATASET, WEIGHTS, kind_of
from farm.jobs.plan import job_presets
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.paths import OutputClaim, shard_dir, stored_output
from farm.presets.library import library_for
from farm.settings import FarmSettings
from farm.storage.card import write_card
from farm.storage.merge import MergeResult, MissingRowsError, Piece, merge
from farm.storage.parts import link, parts_dir

log = logging.getLogger("farm.collect")

_SHARD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.h5$")


@dataclass
class Collected:
    """What a collector call did."""

    run_id: str
    path: Path
    rows: int
    merged: MergeResult | None = None
    requeued: int = 0
    weights: bool = False
    missing: bool = False

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.missing:
            return f"run {self.run_id} is done, but its output {self.path} is gone"
        if self.weights:
            return f"run {self.run_id}: weights of {self.rows} base presets in {self.path}"
        if self.requeued:
            return f"run {self.run_id}: {self.requeued} job(s) lost from shards, sent again"
        if self.merged is None:
            return f"run {self.run_id}: already collected into {self.path} ({self.rows} rows)"
        m = self.merged
        if m.parts:
            return (
                f"run {self.run_id}: {m.rows} rows from {m.jobs} jobs joined from {m.parts} "
                f"parts into {self.path} in {m.seconds:.1f}s (checked in place, nothing "
                f"copied; {m.duplicates} duplicates)"
            )
        return (
            f"run {self.run_id}: {m.rows} rows from {m.jobs} jobs into {self.path} in "
            f"{m.seconds:.1f}s ({m.raw_chunks} raw chunks copied, {m.duplicates} duplicates)"
        )


def pieces_of(ledger: Ledger, folder: Path) -> tuple[list[Piece], dict[int, dict[str, int]]]:
    """The done jobs' pieces in job order up to the first gap (until they hold n rows),
    with those jobs' rejections by global preset index."""
    details = ledger.done_details()
    dups = ledger.duplicate_rows()
    spec = ledger.spec()
    n = spec.n
    pieces: list[Piece] = []
    by_preset: dict[int, dict[str, int]] = {}
    rows = 0
    job = 0
    while job in details and rows < n:
        d = details[job]
        shard = d.get("shard")
        if d["rows"] and (not isinstance(shard, str) or not _SHARD_NAME.match(shard)):
            raise CollectError(f"job {job}: bad shard name in the ledger: {shard!r}")
        skip = tuple(dups.get(job, ()))
        span = (int(d["first"]), int(d["size"])) if "size" in d else None
        path = folder / (shard or "none.h5")
        pieces.append(Piece(job, path, int(d["start"]), int(d["rows"]), skip, span))
        first = job_presets(spec, job, span).start
        if "by_preset" in d:
            for i, reasons in d["by_preset"].items():
                by_preset[first + int(i)] = dict(reasons)
        else:  # a job recorded by an older worker: its rejections as a whole
            by_preset[first] = dict(d["rejections"])
        rows += int(d["rows"]) - len(skip)
        job += 1
    return pieces, by_preset


def collect_run(ledger: Ledger, settings: FarmSettings, sender: Sender | None) -> Collected:
    """Merge a complete run's shards into its output, then mark it done.

    A done run stays done (collecting it again reports its file). A complete run that
    failed or was cancelled (a full disk, say) is collected again once asked. Any error
    fails the run with its reason, so nothing waits on a collector that died.

    Raises:
        RunStateError: the run is not complete.
        CollectError: the merge failed (the run is marked failed with the reason).
    """
    meta = ledger.require().meta()
    spec = ledger.spec()
    if meta["state"] == DONE:
        out = _output(settings, meta, spec)
        return Collected(
            ledger.run_id, out, int(meta.get("rows", spec.n)), missing=not out.exists()
        )
    return COLLECTORS[kind_of(spec).name](ledger, settings, meta, spec, sender)


def collect_dataset(
    ledger: Ledger,
    settings: FarmSettings,
    meta: dict[str, str],
    spec: RunSpec,
    sender: Sender | None,
) -> Collected:
    """A dataset run's end: the shortest prefix of finished jobs merged into the file."""
    out = stored_output(settings.data_dir, meta["output"], roots=settings.output_roots)
    folder = shard_dir(settings.data_dir, ledger.run_id)
    pieces, by_preset = pieces_of(ledger, folder)
    if sum(p.rows for p in pieces) < spec.n:
        raise RunStateError(
            f"run {ledger.run_id} is not complete ({sum(p.rows for p in pieces)}/{spec.n} "
            f"rows in finished jobs; state {meta['state']})"
        )
    claim = OutputClaim(settings.data_dir, meta["output"])
    if not claim.held_by(ledger.run_id):
        raise _failed(ledger, settings, spec, out, CollectError(
            f"output {meta['output']} was taken over by run {claim.holder()} (--force)"
        ))  # fmt: skip
    ledger.move(COLLECTING, only_from=(RUNNING, FAILED, CANCELLED), error="")
    delay = ledger.faults().collect_delay_s
    if delay:
        time.sleep(delay)  # injected: a slow collector
    tp = tier_params(get_registry(), spec.tier)
    try:
        parted = {"isolate": in_child} if spec.part_rows else {}
        merged = (link if spec.part_rows else merge)(
            out,
            spec,
            tp,
            get_registry().fingerprint,
            pieces,
            by_preset=by_preset,
            attrs={"run_id": ledger.run_id},
            library=library_for(spec.sources.library, settings.data_dir),
            **parted,
        )
    except MissingRowsError as e:
        if not ledger.reset_jobs(e.jobs):
            # Another collector finished (or the run was stopped) meanwhile.
            return (
                collect_run(ledger, settings, sender)
                if ledger.state() == DONE
                else (Collected(ledger.run_id, out, 0))
            )
        log.warning("run %s: %s; sending them again", ledger.run_id, e)
        if sender is not None:
            sender.render(ledger.run_id, e.jobs)
        return Collected(ledger.run_id, out, 0, requeued=len(e.jobs))
    except Exception as e:
        raise _failed(ledger, settings, spec, out, e) from e
    finally:
        _give_back_memory()
    if not spec.part_rows:
        # One file now: the parts of a parted dataset it replaced (--force) are not its.
        shutil.rmtree(parts_dir(out), ignore_errors=True)
    _card(ledger.run_id, out)
    ledger.move(
        DONE,
        only_from=(COLLECTING,),
        rows=merged.rows,
        finished=time.time(),
        collect_s=merged.seconds,
    )
    claim.release(ledger.run_id)
    if not (settings.keep_shards or meta.get("keep_shards") == "1"):
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # .shards/ itself, once no run has shards
    return Collected(ledger.run_id, out, merged.rows, merged)


def _give_back_memory() -> None:
    """Return the heap the collector freed to the system (glibc keeps freed memory for
    reuse: the pool process that collected 20,000 rows held 210 MB more than it needed
    until ``malloc_trim``; a no-op where there is no glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def in_child(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child (its memory goes with it); its error, as text, is
    raised here as a :class:`CollectError` (a full disk still reads as one)."""
    from farm.render.forked import call_in_child

    def run() -> bytes:
        try:
            fn()
        except Exception as e:
            return f"{type(e).__name__}: {e}".encode() or b"error"
        return b""

    error, status = call_in_child(run)
    if error is None:
        raise CollectError(f"the process writing the output ended with status {status}")
    if error:
        raise CollectError(error.decode())


def _card(run_id: str, out: Path) -> None:
    """Write the dataset card in a child process: the card reads whole columns, and
    through a parted file's virtual datasets HDF5 keeps every part's dataset open (about
    11 KB each, never given back), which the worker process that collected would keep."""

    def write() -> None:
        write_card(out)

    try:
        in_child(write)
    except CollectError as e:  # the dataset is complete; `farm card` can write it later
        log.warning("run %s: no dataset card (%s); `farm card %s` writes it", run_id, e, out)


def _output(settings: FarmSettings, meta: dict[str, str], spec: RunSpec) -> Path:
    return stored_output(
        settings.data_dir, meta["output"], kind_of(spec).suffix, settings.output_roots
    )


def _failed(
    ledger: Ledger, settings: FarmSettings, spec: RunSpec, out: Path, e: BaseException
) -> CollectError:
    """Fail the run with why the collector could not finish; the error to raise."""
    if is_disk_full(e):
        need = estimate_bytes(spec) // 2
        reason = str(disk_full(out.parent, need, ledger.run_id))
    else:
        reason = f"the collector failed: {e if isinstance(e, FarmError) else repr(e)}"
    log.error("run %s: %s", ledger.run_id, reason)
    ledger.fail(reason)
    return CollectError(f"run {ledger.run_id}: {reason}")


def collect_weights(
    ledger: Ledger,
    settings: FarmSettings,
    meta: dict[str, str],
    spec: RunSpec,
    sender: Sender | None = None,
) -> Collected:
    """An importance run's end: the first n measured base presets (in job order) become
    weights, written as JSON and, when asked, into the target dataset."""
    from farm.jobs.weights import aggregate, write_json
    from farm.storage.importance import write_importance

    assert spec.weights is not None
    roots = settings.output_roots
    out = stored_output(settings.data_dir, meta["output"], ".json", roots)
    target = spec.weights.target
    dataset = stored_output(settings.data_dir, target, roots=roots) if target else None
    details = ledger.done_details()
    results = ledger.results()
    measured: list[int] = []
    job = 0
    while job in details and len(measured) < spec.n:
        if details[job]["rows"]:
            if job not in results:
                raise CollectError(f"job {job} is done but its result is missing")
            measured.append(job)
        job += 1
    if len(measured) < spec.n:
        raise RunStateError(
            f"run {ledger.run_id} is not complete ({len(measured)}/{spec.n} base presets)"
        )
    tp = tier_params(get_registry(), spec.tier)
    t0 = time.monotonic()
    try:
        weights = aggregate([results[j] for j in measured], tp)
        weights["run_id"] = ledger.run_id
        write_json(out, weights)
        if dataset is not None:
            write_importance(dataset, weights)
    except Exception as e:
        raise _failed(ledger, settings, spec, out, e) from e
    ledger.move(
        DONE,
        only_from=(COLLECTING, RUNNING),
        rows=spec.n,
        finished=time.time(),
        collect_s=time.monotonic() - t0,
    )
    OutputClaim(settings.data_dir, meta["output"]).release(ledger.run_id)
    return Collected(ledger.run_id, out, spec.n, weights=True)


#: What collects each kind of run (:mod:`farm.jobs.kinds`).
COLLECTORS: dict[str, Callable[..., Collected]] = {
    DATASET.name: collect_dataset,
    WEIGHTS.name: collect_weights,
}

"""The ledger's scripts on a real Redis: the prefix, its audio dedup and the counters."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from coordinator.ledger import COLLECTING, Ledger
from farm.config import MAX_BARREN_JOBS, RenderSettings, RunSpec
from tests.redis_helpers import RedisServer


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    server = RedisServer(tmp_path_factory.mktemp("ledger-redis"))
    server.start()
    yield redis.Redis.from_url(server.url, decode_responses=True)
    server.stop()


SPEC = RunSpec(tier=1, n=5, batch_size=2, render=RenderSettings(notes=(60,)))


def _ledger(client: redis.Redis, run_id: str) -> Ledger:
    ledger = Ledger(client, run_id)
    ledger.create(SPEC, output=f"{run_id}.h5", window=8, keep_shards=False)
    ledger.top_up()
    return ledger


def _finish(ledger: Ledger, job: int, hashes: list[str]) -> None:
    ledger.finish_job(job, rows=len(hashes), renders=2, rejections={}, shard="s.h5",
                      hashes=hashes)  # fmt: skip


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_duplicate_audio_is_decided_in_canonical_order(
    client: redis.Redis, order: tuple[int, ...]
) -> None:
    """Whatever order jobs finish in, the later row (job, offset) of equal audio is the
    duplicate, and the prefix counts distinct rows only."""
    ledger = _ledger(client, f"dup-{''.join(map(str, order))}")
    jobs = {0: ["a", "b"], 1: ["b", "c"], 2: ["a", "d"]}
    for job in order:
        _finish(ledger, job, jobs[job])
    assert ledger.duplicate_rows() == {1: [0], 2: [0]}
    st = ledger.status()
    assert st.accepted == 4  # a b c d
    assert st.rejections == {"DUPLICATE_AUDIO": 2}
    assert st.state == "running"  # 4 < n = 5: more jobs were topped up
    assert ledger.outstanding()


def test_reset_rebuilds_the_dedup(client: redis.Redis) -> None:
    """A job whose rows were lost is forgotten: the dedup is rebuilt without it, so its
    rows count again when it is rendered again."""
    ledger = _ledger(client, "dup-reset")
    for job, hashes in {0: ["a", "b"], 1: ["b", "c"], 2: ["d", "e"]}.items():
        _finish(ledger, job, hashes)
    assert ledger.state() == COLLECTING  # a b c d e = 5 rows
    assert ledger.reset_jobs([0])
    assert ledger.duplicate_rows() == {}  # the prefix is empty: job 0 is missing
    _finish(ledger, 0, ["a", "b"])
    assert ledger.duplicate_rows() == {1: [0]}
    assert ledger.status().accepted == 5
    assert ledger.state() == COLLECTING


def test_a_done_run_has_nothing_outstanding(client: redis.Redis) -> None:
    """Jobs sent past what the file needed are dropped when the run is done (a failed or
    cancelled run keeps them, for resume)."""
    ledger = _ledger(client, "done-clears")
    assert ledger.outstanding() == [0, 1, 2]  # presets 0-1, 2-3, 4 (no worker seen yet)
    _finish(ledger, 0, ["a", "b", "c"])
    _finish(ledger, 1, ["d", "e", "f"])  # 6 rows >= n = 5: job 2 is not needed
    assert ledger.state() == COLLECTING and ledger.outstanding() == [2]
    kept = _ledger(client, "failed-keeps")
    _finish(kept, 0, ["a"])
    assert kept.fail("test") and kept.outstanding()
    before = ledger.status()
    assert ledger.move("done", only_from=(COLLECTING,))
    assert ledger.outstanding() == [] and ledger.status().outstanding == 0
    # What only collecting needed is gone (Redis holds no row of a done run); the totals
    # that `farm status` shows stay.
    built = ("done", "rows", "audio", "spans")
    assert client.exists(*(kept.k[k] for k in built)) == len(built)
    assert client.exists(*(ledger.k[k] for k in built)) == 0
    # A run whose shards are kept keeps their record too (bench/recollect.py reads it).
    shards = Ledger(client, "kept-shards")
    shards.create(SPEC, output="kept-shards.h5", window=8, keep_shards=True)
    shards.top_up()
    _finish(shards, 0, ["a", "b", "c"])
    _finish(shards, 1, ["d", "e", "f"])
    assert shards.move("done", only_from=(COLLECTING,))
    assert client.exists(*(shards.k[k] for k in built)) == len(built)
    after = ledger.status()
    assert (after.accepted, after.renders, after.jobs_done) == (5, 4, 2)
    assert (after.accepted, after.renders, after.jobs_done) == (
        before.accepted,
        before.renders,
        before.jobs_done,
    )


def test_each_job_is_recorded_once_and_the_window_is_topped_up(client: redis.Redis) -> None:
    """advance.lua: the first top-up sends a window's worth (bounded by the rows still
    missing), a second delivery of a finished job is refused, and each finished job tops the
    window up again."""
    ledger = Ledger(client, "record-once")
    ledger.create(SPEC, output="record-once.h5", window=2, keep_shards=False)
    first = ledger.top_up()
    assert first.jobs == [0, 1] and not first.collect
    assert ledger.top_up().jobs == []  # the window is full
    advance = ledger.finish_job(0, rows=2, renders=2, rejections={}, shard="s.h5")
    assert advance.jobs == [2] and not advance.duplicate
    again = ledger.finish_job(0, rows=2, renders=2, rejections={}, shard="s.h5")
    assert again.duplicate and again.jobs == []
    st = ledger.status()
    assert st.accepted == 2 and st.jobs_done == 1 and st.kind == "dataset"


def test_the_prefix_waits_for_earlier_jobs_and_collects_once(client: redis.Redis) -> None:
    """advance.lua: rows count towards n only as a prefix of finished jobs; the collector is
    triggered exactly once, when the prefix reaches n."""
    ledger = _ledger(client, "prefix")
    ledger.finish_job(1, rows=2, renders=2, rejections={}, shard="s.h5")
    ledger.finish_job(2, rows=2, renders=2, rejections={}, shard="s.h5")
    assert ledger.state() == "running"  # job 0 missing: no prefix yet
    done = ledger.finish_job(0, rows=2, renders=2, rejections={}, shard="s.h5")
    assert done.collect and ledger.state() == COLLECTING
    late = ledger.finish_job(3, rows=2, renders=2, rejections={}, shard="s.h5")
    assert not late.collect and late.jobs == []


def test_barren_jobs_fail_the_run(client: redis.Redis) -> None:
    """advance.lua: MAX_BARREN_JOBS finished jobs in a row without a row fail the run with
    the reason."""
    spec = SPEC.model_copy(update={"n": 10_000})
    ledger = Ledger(client, "barren")
    ledger.create(spec, output="barren.h5", window=64, keep_shards=False)
    ledger.top_up()
    for job in range(MAX_BARREN_JOBS):
        ledger.finish_job(job, rows=0, renders=2, rejections={"SILENT": 2})
    assert ledger.state() == "failed"
    assert "no row accepted in" in ledger.meta()["error"]


def test_start_beat_lost_and_reclaim(client: redis.Redis) -> None:
    """start.lua counts attempts and refuses done jobs; beat.lua stamps only jobs still out;
    lost.lua hands a silent job to one caller only; move.lua is compare-and-set;
    reclaim.lua takes a silent collector once."""
    ledger = _ledger(client, "lifecycle")
    assert ledger.start_job(0, "w1")[:2] == ("ok", 1)
    assert ledger.start_job(0, "w2")[:2] == ("ok", 2)  # a second delivery
    ledger.finish_job(1, rows=1, renders=1, rejections={}, shard="s.h5")
    assert ledger.start_job(1, "w1") == ("done", 0, None)
    ledger.beat(0, 1)
    assert client.hexists(ledger.k["beat"], "0") and not client.hexists(ledger.k["beat"], "1")
    assert ledger.lost_jobs(0.0, waiting=range(100)) == [0]  # started, silent
    assert ledger.lost_jobs(30.0, waiting=range(100)) == []  # its clock restarted
    assert not ledger.move(COLLECTING, only_from=("done",))
    assert ledger.move(COLLECTING, only_from=("running",))
    assert ledger.reclaim_collector(0.0)  # silent for more than 0 s: taken
    assert not ledger.reclaim_collector(30.0)  # just taken: not again


def _spans_of_a_run(client: redis.Redis, run_id: str, spec: RunSpec, window: int) -> list:
    """Every job's span, in job order, of a run whose jobs finish in order (all notes
    accepted, each job's rows its presets)."""
    ledger = Ledger(client, run_id)
    ledger.create(spec, output=f"{run_id}.h5", window=window, keep_shards=False)
    queue = list(ledger.top_up().jobs)
    spans = {}
    while queue:
        job = queue.pop(0)
        state, _, span = ledger.start_job(job, f"w{job % 2}")  # two workers
        assert state == "ok" and span is not None
        spans[job] = span
        hashes = [f"{run_id}-{g}" for g in range(span[0], span[0] + span[1])]
        advance = ledger.finish_job(
            job, rows=len(hashes), renders=len(hashes), rejections={}, shard="s.h5",
            hashes=hashes, span=span,
        )  # fmt: skip
        queue += advance.jobs
    assert ledger.state() == COLLECTING
    return [spans[j] for j in sorted(spans)]


def test_the_last_jobs_of_a_run_are_smaller(client: redis.Redis) -> None:
    """Jobs take batch_size presets until fewer than tail * batch_size are still needed,
    then a shrinking share of what is left, so workers finish together. The spans are
    contiguous from preset 0 and cover exactly the presets the rows need (every render
    accepted here), none past them."""
    spec = RunSpec(tier=1, n=200, batch_size=16, render=RenderSettings(notes=(60,)))
    spans = _spans_of_a_run(client, "tail", spec, window=4)  # tail: 2 workers
    # A window that holds the whole run sends every job before any worker took one:
    # nobody to share a tail with yet, so the jobs are whole (no tiny jobs for a small run
    # on a cluster's large window).
    wide = _spans_of_a_run(client, "tail-512", spec, window=512)
    assert [s[1] for s in wide] == [16] * 12 + [8]
    assert [s[0] for s in spans] == [0, *np.cumsum([s[1] for s in spans])[:-1]]
    assert sum(s[1] for s in spans) == 200
    sizes = [s[1] for s in spans]
    assert sizes[0] == 16 and sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) == 2  # at least batch / 8 but for the last
    assert 16 * 2 > sum(s for s in sizes if s < 16) >= 16  # the tail is about 2 batches


def test_a_small_embedded_run_shares_its_first_jobs(client: redis.Redis) -> None:
    """An embedded run knows its local workers before any takes a job: a run smaller than
    a batch per worker is cut so that each gets a share at once (whole jobs left one of
    two workers idle for the whole of a 40-row run). On a broker nothing is known yet."""
    spec = RunSpec(tier=1, n=20, batch_size=16, render=RenderSettings(notes=(60,)))

    def first_spans(run_id: str, workers: int) -> list:
        ledger = Ledger(client, run_id)
        ledger.create(spec, output=f"{run_id}.h5", window=4, keep_shards=False, workers=workers)
        return [ledger.start_job(j, "w")[2] for j in ledger.top_up().jobs]

    # 10 presets for one worker, 5 + 3 + 2 for the other (each job 1/2 of what is left).
    assert first_spans("small-embedded", workers=2) == [(0, 10), (10, 5), (15, 3), (18, 2)]
    assert first_spans("small-broker", workers=0) == [(0, 16), (16, 4)]


def test_runs_of_fixed_jobs_keep_them(client: redis.Redis) -> None:
    """An importance run's jobs are one base preset each, never split: no spans."""
    from farm.config import WeightsSettings

    spec = RunSpec(tier=1, n=3, batch_size=1, weights=WeightsSettings())
    ledger = Ledger(client, "weights-fixed")
    ledger.create(spec, output="w.json", window=4, keep_shards=False)
    assert ledger.top_up().jobs[0] == 0
    assert ledger.start_job(0, "w") == ("ok", 1, None)

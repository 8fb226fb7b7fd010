"""The ledger's scripts on a real Redis: the prefix, its audio dedup and the counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from coordinator.ledger import COLLECTING, Ledger
from farm.config import RenderSettings, RunSpec
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
    assert ledger.outstanding() == [0, 1, 2]
    _finish(ledger, 0, ["a", "b", "c"])
    _finish(ledger, 1, ["d", "e", "f"])  # 6 rows >= n = 5: job 2 is not needed
    assert ledger.state() == COLLECTING and ledger.outstanding() == [2]
    kept = _ledger(client, "failed-keeps")
    assert kept.fail("test") and kept.outstanding()
    assert ledger.move("done", only_from=(COLLECTING,))
    assert ledger.outstanding() == [] and ledger.status().outstanding == 0

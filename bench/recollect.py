"""The collector alone, on a finished run's rows: both of its paths (parts joined in place,
one file copied) run again on hard-linked copies of the run's shards, in one session, with
the seconds and the resident memory each took. Run it with two checkouts on
``PYTHONPATH`` to compare collectors on the same rows.

    farm submit --tier 1 -n 20000 --render-duration 0.1 --note-duration 0.05 \\
        --part-rows 10000 --keep-shards -o scale.h5
    python bench/recollect.py data t1-...      # the run id farm submit printed

The run must be made with ``--keep-shards`` (a done run keeps its ledger record only
then). Its shards are found in its ``NAME.parts/`` (a parted run) or in
``data/.shards/RUN``. Nothing of the run is changed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from coordinator.collect import pieces_of
from coordinator.ledger import Ledger
from farm.cli.session import open_farm
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.paths import shard_dir, stored_output
from farm.presets.library import library_for
from farm.settings import FarmSettings
from farm.storage.merge import merge
from farm.storage.parts import link, parts_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("run_id")
    a = ap.parse_args()
    settings = FarmSettings(data_dir=a.data_dir)
    with open_farm(settings, run_workers=None) as farm:
        ledger = Ledger(farm.client, a.run_id)
        spec, meta = ledger.spec(), ledger.meta()
        with tempfile.TemporaryDirectory(dir=a.data_dir) as tmp:
            for layout in ("parts", "one file"):
                shards = parts_dir(stored_output(a.data_dir, meta["output"]))
                if not shards.is_dir():  # a one-file run: its kept shards
                    shards = shard_dir(a.data_dir, a.run_id)
                work = Path(tmp) / layout.replace(" ", "-")
                subprocess.run(["cp", "-al", str(shards), str(work)], check=True)
                pieces, by_preset = pieces_of(ledger, work)
                registry = get_registry()
                args = (work / "out.h5", spec, tier_params(registry, spec.tier))
                kw = {
                    "by_preset": by_preset,
                    "library": library_for(spec.sources.library, a.data_dir),
                }
                t0 = time.monotonic()
                if layout == "parts":
                    done = link(*args, registry.fingerprint, pieces, **kw)  # type: ignore[arg-type]
                else:
                    done = merge(*args, registry.fingerprint, pieces, **kw)  # type: ignore[arg-type]
                seconds = time.monotonic() - t0
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
                print(
                    f"{layout:9} {done.rows} rows from {done.jobs} jobs in {seconds:6.2f} s "
                    f"(peak RSS so far {peak} MB)"
                )


if __name__ == "__main__":
    main()

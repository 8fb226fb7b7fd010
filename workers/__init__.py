"""The Celery side of the farm: the app and its thin tasks (``celery -A workers worker``).

``farm.render(run_id, job)`` renders one job into the worker process's shard and records
it in the ledger; ``farm.collect(run_id)`` merges the shards into the final file. Both are
a few lines over plain functions in :mod:`workers.render` and :mod:`coordinator.collect`.
"""

from workers.app import app

__all__ = ["app"]

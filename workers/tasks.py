"""The farm's Celery tasks: decode the arguments, call a plain function, return a line."""

from __future__ import annotations

from celery import Celery

from coordinator.broker import COLLECT_TASK, RENDER_TASK


def register(app: Celery) -> None:
    """Register ``farm.render`` and ``farm.collect`` on ``app``."""

    @app.task(name=RENDER_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
    def render(run_id: str, job: int) -> str:
        from workers.context import WorkerContext
        from workers.render import process_job

        return process_job(WorkerContext.get(app.conf.farm_settings), str(run_id), int(job))

    @app.task(name=COLLECT_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
    def collect(run_id: str) -> str:
        from coordinator.collect import collect_run
        from workers.context import WorkerContext
        from workers.liveness import beating

        ctx = WorkerContext.get(app.conf.farm_settings)
        ledger = ctx.ledger(str(run_id))
        with beating(ledger.beat_collector, ctx.settings.heartbeat_s):
            return collect_run(ledger, ctx.settings, ctx.sender).summary()

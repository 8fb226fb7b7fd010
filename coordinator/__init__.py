"""The coordinator: a run's life on Redis (the farm issue).

Nothing here yet: the deterministic plan it will enqueue is
:func:`farm.jobs.plan.sample_job` (job ``j`` = f(spec, j)).
"""

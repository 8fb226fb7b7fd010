"""What a run's jobs do: which presets job ``j`` holds (:mod:`~farm.jobs.plan`), a dataset
job rendered (:mod:`~farm.jobs.render`), an importance job (:mod:`~farm.jobs.weights`), a
whole run in one process (:mod:`~farm.jobs.local`), and the kinds of run
(:mod:`~farm.jobs.kinds`)."""

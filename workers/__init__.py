"""Celery workers: the Celery app and thin tasks over ``farm`` functions (the farm issue).

Nothing here yet: the render path a task will call is :func:`farm.jobs.render_job`.
"""

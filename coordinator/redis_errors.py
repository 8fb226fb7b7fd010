"""Redis errors as the farm's one-line errors: a refused password, a lost connection, a
broker whose disk is full."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from farm.errors import BrokerError, DiskFullError


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turns a redis-py connection or password error into a one-line BrokerError, and a
    broker that cannot write its append-only file into a DiskFullError."""
    try:
        yield
    except redis.AuthenticationError as e:
        raise BrokerError(f"the broker refused the password: {e}") from e
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerError(f"lost the broker: {e}") from e
    except redis.ResponseError as e:
        if str(e).startswith("MISCONF") or "No space left" in str(e):
            raise DiskFullError(
                f"the broker cannot write its data (disk full on the Redis host?): {e}"
            ) from e
        raise

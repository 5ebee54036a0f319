"""Trigger drivers: what the Functions host's trigger listeners do, one driver per non-HTTP function.

A driver class registers itself for its binding type (``queueTrigger``, ``blobTrigger``) with
:func:`trigger_driver`; :class:`~scripts.localhost.host.LocalHost` looks functions' triggers up
in :data:`TRIGGER_DRIVERS` and polls each driver from its own thread, backing off when idle
(randomized exponential back-off up to ``maxPollingInterval``, as the host's queue listener).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .config import MIN_POLLING_INTERVAL
from .functions import UserFunction

if TYPE_CHECKING:
    from .host import LocalHost

#: One logger for the whole host, named as before the split (``python -m`` runs as ``__main__``).
log = logging.getLogger("scripts.localhost")


#: Trigger binding type (``queueTrigger``, ``blobTrigger``, ...) → driver class.
TRIGGER_DRIVERS: dict[str, type[TriggerDriver]] = {}


def trigger_driver(cls: type[TriggerDriver]) -> type[TriggerDriver]:
    """Class decorator: register a driver for its binding type."""
    TRIGGER_DRIVERS[cls.binding] = cls
    return cls


class TriggerDriver:
    """A source of invocations for one function; the host polls it from its own thread."""

    binding: ClassVar[str] = ""

    def __init__(self, host: LocalHost, function: UserFunction) -> None:
        self.host = host
        self.function = function
        self.name = function.name
        self.config = host.config

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        raise NotImplementedError

    def ensure(self) -> None:
        """Create what the trigger reads from (idempotent)."""

    def poll_once(self) -> int:
        """Invoke the function for what is pending now; returns how many invocations it made."""
        raise NotImplementedError

    def next_delay(self, handled: int, previous: float) -> float:
        """Seconds to wait before the next poll (randomized exponential back-off when idle)."""
        if handled:
            return 0.0
        grown = max(MIN_POLLING_INTERVAL, previous * 2)
        return min(self.config.max_polling_interval, grown * random.uniform(0.8, 1.2))

    def describe(self) -> str:
        raise NotImplementedError

    def run_all(self, calls: list[Callable[[], Any]]) -> list[BaseException | None]:
        """Run invocations concurrently in the host's pool; their exceptions (None for success), in order."""
        futures = [self.host.submit(call) for call in calls]
        concurrent.futures.wait(futures)
        return [f.exception() for f in futures]

    def invoke(self, argument: Any) -> None:
        """Call the user function once (runs in a pool thread)."""
        started = time.monotonic()
        try:
            self.host.call(self.function, self.function.kwargs(argument))
        except Exception:
            log.info("Executed 'Functions.%s' (Failed, %.0f ms)", self.name, (time.monotonic() - started) * 1000)
            raise
        log.info("Executed 'Functions.%s' (Succeeded, %.0f ms)", self.name, (time.monotonic() - started) * 1000)

"""The interface every scheduler implements: accept jobs, run them on instances, drain."""

from __future__ import annotations

import abc

from server.scheduling.job import InferenceJob


class Scheduler(abc.ABC):
    """Owns the queue of one model version and hands work to its instances.

    All methods run on the event loop. ``submit`` never blocks: it enqueues or raises at once.
    """

    # Not empty for a scheduler that answers repeated requests from a response cache: admission
    # then gives each job a ``cache_key`` (a digest of everything that decides its result, seeded
    # with this token) and leaves its inputs undecoded (``InferenceJob.load_feeds``), so that a
    # request answered from the cache costs no decoding and no queue.
    cache_token: bytes = b""

    @abc.abstractmethod
    def submit(self, job: InferenceJob) -> None:
        """Queue ``job``; its future resolves with outputs or a ServerError.

        Raises ServerError(UNAVAILABLE) when the queue is full or the scheduler is closing.
        """

    @abc.abstractmethod
    def check_capacity(self, priority: int) -> None:
        """Raise the ServerError ``submit`` would raise for a job of ``priority`` (full queue,
        closing) without queueing anything; never blocks."""

    @abc.abstractmethod
    async def close(self, drain_timeout_secs: float | None) -> None:
        """Stop accepting jobs, let queued and running jobs finish (up to the timeout), stop workers.

        Jobs still queued when the timeout ends fail with UNAVAILABLE.
        """

    @property
    @abc.abstractmethod
    def pending_count(self) -> int:
        """Jobs accepted but not yet executing."""

    @property
    @abc.abstractmethod
    def executing_count(self) -> int:
        """Jobs handed to an instance and not answered yet (running, or next in its hand-over)."""

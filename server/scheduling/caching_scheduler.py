"""A Scheduler in front of another (the dynamic batcher) that answers repeated requests from the
response cache, and computes identical requests that miss at the same time only once.

Every job arrives with its ``cache_key`` and its inputs still undecoded (Scheduler.cache_token):

- a hit is answered at once from the cache: no decoding, no queue, no batcher, no instance;
- a miss whose key is already being computed waits for that computation (a follower);
- any other miss is decoded and handed to the inner scheduler (the leader); when it succeeds its
  outputs are stored and given to its followers too.

A leader that fails because of the model itself (ONNX Runtime, reason BACKEND) fails its
followers with the same error: the same inputs would fail the same way. A leader that fails
for a reason of its own (cancelled, its deadline or queue timeout, a full queue) does not
decide for the others: the first follower still waiting takes its place and goes to the model.

Statistics follow Triton: a request answered from the cache (a hit or a follower) is a success
with a cache hit, not an inference or an execution; a leader is a cache miss whose time is its
lookup plus its insertion.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic_ns

from server.errors import FailureReason, ServerError
from server.observability.statistics import ModelStats
from server.scheduling.base import Scheduler
from server.scheduling.job import InferenceJob
from server.scheduling.response_cache import CachePartition, Outputs, ResponseCache


class _Flight:
    """A key being computed: its leader and the identical requests waiting for it."""

    __slots__ = ("followers", "leader")

    def __init__(self, leader: InferenceJob, followers: list[InferenceJob]) -> None:
        self.leader, self.followers = leader, followers


class CachingScheduler(Scheduler):
    def __init__(
        self,
        inner: Scheduler,
        cache: ResponseCache,
        share: CachePartition,
        stats: ModelStats,
        clock: Callable[[], int] = monotonic_ns,
    ) -> None:
        self.cache_token = share.token
        self._inner, self._cache, self._share, self._stats, self._clock = inner, cache, share, stats, clock
        self._flights: dict[bytes, _Flight] = {}
        self._followers = 0
        self._closing = False
        self._dropped = False
        stats.cache_enabled = True

    @property
    def pending_count(self) -> int:
        # A follower waits like a queued request, though not in the queue.
        return self._inner.pending_count + self._followers

    @property
    def executing_count(self) -> int:
        return self._inner.executing_count

    def check_capacity(self, priority: int) -> None:
        # A request the cache answers needs no room in the queue; a miss is checked when it is led.
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")

    def submit(self, job: InferenceJob) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")
        started = self._clock()
        outputs = self._cache.get(job.cache_key)
        looked_up = self._clock()
        job.cache_lookup_ns = looked_up - started
        if outputs is not None:
            _answer(job, outputs, looked_up)
            return
        flight = self._flights.get(job.cache_key)
        if flight is not None:
            flight.followers.append(job)
            self._followers += 1
            return
        self._lead(job, [])

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain the inner scheduler, then drop this version's entries from the cache."""
        self._closing = True
        await self._inner.close(drain_timeout_secs)
        self._cache.drop(self._share)
        self._dropped = True

    # ---- leaders and followers -----------------------------------------------------------

    def _lead(self, job: InferenceJob, followers: list[InferenceJob]) -> None:
        """Send ``job`` to the model, with ``followers`` waiting for it. Raises what the inner
        scheduler or the decoding of its inputs raises (nothing is registered then)."""
        self._inner.check_capacity(job.priority)  # before any decoding
        job.load_feeds()
        self._inner.submit(job)
        flight = self._flights[job.cache_key] = _Flight(job, followers)
        self._followers += len(followers)
        job.future.add_done_callback(lambda _: self._landed(flight))

    def _landed(self, flight: _Flight) -> None:
        """On the loop, once the leader has an outcome: store it and answer the followers."""
        leader, key = flight.leader, flight.leader.cache_key
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._followers -= len(flight.followers)
        waiting = [job for job in flight.followers if not job.abandoned()]
        future = leader.future
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self._stats.record_cache_miss(leader.cache_lookup_ns)
            if isinstance(error, ServerError) and error.reason is FailureReason.BACKEND:
                for job in waiting:
                    job.fail(error)
            elif waiting:
                self._promote(waiting)
            return
        started = self._clock()
        # A version that has unloaded keeps nothing (its partition is gone).
        outputs = leader.outputs if self._dropped else self._cache.put(self._share, key, leader.outputs)
        stored = self._clock()
        self._stats.record_cache_miss(leader.cache_lookup_ns + stored - started)
        for job in waiting:
            _answer(job, outputs, stored)

    def _promote(self, waiting: list[InferenceJob]) -> None:
        """The first waiting follower becomes the leader of the others."""
        leader, rest = waiting[0], waiting[1:]
        try:
            self._lead(leader, rest)
        except Exception as exc:  # a refusal (closing, full queue) or a decoding error: the same for all of them
            error = exc if isinstance(exc, ServerError) else ServerError.internal(f"internal error: {exc}")
            for job in waiting:
                job.fail(error)


def _answer(job: InferenceJob, outputs: Outputs, at_ns: int) -> None:
    job.outputs = outputs
    job.from_cache = True
    # A cached answer "executes" when it is given: the time until then is its queue time.
    job.timing.exec_start_ns = at_ns
    job.succeed()

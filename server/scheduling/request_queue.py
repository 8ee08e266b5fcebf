"""The queue of one model version: priority levels, admission bounds, timeouts, cancellation.

Pure bookkeeping driven by the caller's clock; it never sleeps or touches the event loop, so it
is tested with a fake clock. Order: level 1 first; within a level, normal requests in arrival
order, then requests whose timeout expired under the DELAY action.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from server.errors import ErrorCode, FailureReason, ServerError
from server.scheduling.job import InferenceJob
from server.scheduling.queue_policy import PriorityPolicy, QueuePolicy, TimeoutAction


@dataclass(slots=True)
class _Level:
    policy: QueuePolicy
    normal: deque[InferenceJob] = field(default_factory=deque)
    delayed: deque[InferenceJob] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.normal) + len(self.delayed)


# Called for each job the queue drops, with the error it fails with.
FailJob = Callable[[InferenceJob, ServerError], None]


def queue_full() -> ServerError:
    return ServerError(ErrorCode.UNAVAILABLE, "Exceeds maximum queue size", FailureReason.REJECTED)


def timeout_expired() -> ServerError:
    return ServerError(ErrorCode.UNAVAILABLE, "Request timeout expired", FailureReason.REJECTED)


def deadline_exceeded() -> ServerError:
    return ServerError(ErrorCode.DEADLINE_EXCEEDED, "Deadline exceeded while the request was queued", FailureReason.CANCELED)


class RequestQueue:
    def __init__(self, policy: PriorityPolicy) -> None:
        self._policy = policy
        self._levels = [_Level(level_policy) for level_policy in policy.levels]
        self._size = 0
        # False while no queued job carries a queue timeout or a caller deadline (the common
        # case): then nothing can expire and sweeps only drop cancelled jobs.
        self._may_expire = False

    def __len__(self) -> int:
        return self._size

    def check_capacity(self, priority: int) -> None:
        """Raise ServerError(UNAVAILABLE, "Exceeds maximum queue size") if a job of ``priority``
        would be refused now; lets a request be refused before its tensors are decoded."""
        level = self._levels[self._policy.level_of(priority) - 1]
        if level.policy.max_queue_size and len(level) >= level.policy.max_queue_size:
            raise queue_full()

    def admit(self, job: InferenceJob, now_ns: int) -> None:
        """Queue ``job`` at its priority level, stamping its timeout deadline.

        Raises ServerError(UNAVAILABLE, "Exceeds maximum queue size") when that level is full.
        """
        job.level = self._policy.level_of(job.priority)
        level = self._levels[job.level - 1]
        if level.policy.max_queue_size and len(level) >= level.policy.max_queue_size:
            raise queue_full()
        timeout_ns = level.policy.timeout_ns(job.timeout_us)
        job.timeout_at_ns = now_ns + timeout_ns if timeout_ns else 0
        level.normal.append(job)
        self._size += 1
        if job.timeout_at_ns or job.deadline_ns:
            self._may_expire = True

    def ordered(self, now_ns: int, fail: FailJob) -> list[InferenceJob]:
        """The live jobs in dispatch order, after dropping abandoned ones and applying timeouts.

        Jobs past their queue timeout fail (REJECT) or move behind their level (DELAY); jobs past
        the caller's deadline fail with DEADLINE_EXCEEDED; cancelled jobs are dropped silently.
        """
        jobs: list[InferenceJob] = []
        for level in self._levels:
            if level.normal:
                if self._may_expire:
                    self._sweep(level, now_ns, fail)
                elif any(job.future.done() for job in level.normal):
                    self._drop_abandoned(level)
            if level.delayed:
                self._sweep_delayed(level, now_ns, fail)
            jobs.extend(level.normal)
            jobs.extend(level.delayed)
        if not jobs:
            self._may_expire = False
        return jobs

    def remove(self, chosen: list[InferenceJob]) -> None:
        """Take dispatched jobs out of the queue."""
        first = self._levels[0].normal
        if len(first) >= len(chosen) and all(a is b for a, b in zip(first, chosen)):
            for _ in chosen:  # the usual case: the batch is the head of the top level
                first.popleft()
            self._size -= len(chosen)
            return
        ids = {id(job) for job in chosen}
        for level in self._levels:
            for queue in (level.normal, level.delayed):
                if queue and any(id(job) in ids for job in queue):
                    kept = [job for job in queue if id(job) not in ids]
                    queue.clear()
                    queue.extend(kept)
        self._size -= len(chosen)

    def next_expiry_ns(self) -> int | None:
        """The earliest queue-timeout or deadline among queued jobs (to wake up for it)."""
        if not self._may_expire:
            return None
        times = [
            t
            for level in self._levels
            for queue in (level.normal, level.delayed)
            for job in queue
            for t in (job.timeout_at_ns, job.deadline_ns)
            if t
        ]
        return min(times) if times else None

    def drain_all(self) -> list[InferenceJob]:
        """Remove and return every queued job (used when a version is unloaded)."""
        jobs = [job for level in self._levels for queue in (level.normal, level.delayed) for job in queue]
        for level in self._levels:
            level.normal.clear()
            level.delayed.clear()
        self._size = 0
        self._may_expire = False
        return jobs

    def _sweep(self, level: _Level, now_ns: int, fail: FailJob) -> None:
        kept: deque[InferenceJob] = deque()
        for job in level.normal:
            if self._expired(job, now_ns, fail):
                continue
            if job.timeout_at_ns and now_ns >= job.timeout_at_ns:
                job.timeout_at_ns = 0
                if level.policy.timeout_action is TimeoutAction.DELAY:
                    level.delayed.append(job)
                    continue
                self._size -= 1
                fail(job, timeout_expired())
                continue
            kept.append(job)
        level.normal = kept

    def _drop_abandoned(self, level: _Level) -> None:
        kept = deque(job for job in level.normal if not job.future.done())
        self._size -= len(level.normal) - len(kept)
        level.normal = kept

    def _sweep_delayed(self, level: _Level, now_ns: int, fail: FailJob) -> None:
        level.delayed = deque(job for job in level.delayed if not self._expired(job, now_ns, fail))

    def _expired(self, job: InferenceJob, now_ns: int, fail: FailJob) -> bool:
        """Drop a cancelled job or fail one whose caller's deadline passed; True if it left."""
        if job.abandoned():
            self._size -= 1
            return True
        if job.deadline_ns and now_ns >= job.deadline_ns:
            self._size -= 1
            fail(job, deadline_exceeded())
            return True
        return False

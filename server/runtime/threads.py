"""How ONNX Runtime's CPU threads are shared: every session may use every core, none spins.

ONNX Runtime gives each session an intra-op pool whose idle threads spin, polling for work, for
a while after every run. In this server that spinning takes the cores the event loop needs
(measured: mlp at concurrency 1 cost 1.5-2x the CPU per request with a spinning 2-thread pool,
for no better latency). So by default:

- each CPU session without thread counts of its own gets ``intra_op_thread_count`` threads
  (``--backend-config=onnxruntime,intra_op_thread_count=N``; default: every core), so one request
  alone can use the whole machine, and its pool does not spin
  (``session.intra_op.allow_spinning=0`` unless the config sets that key): a pool with nothing to
  do sleeps, so instances that are not running cost the others nothing;
- a model whose config sets ``intra_op_thread_count`` / ``inter_op_thread_count`` (Triton's
  parameters) gets exactly those.

``--backend-config=onnxruntime,enable-global-threadpool=true`` (Triton's setting) instead puts
every session on ONE process-wide pool of ``intra_op_thread_count`` threads
(``onnxruntime.set_global_thread_pool_sizes``, ``use_per_session_threads = False``), so instances
running at once never hold more threads than that. ORT's Python binding cannot stop that pool
from spinning, and refuses a session with its own threads once the global pools exist ("use_per_
session_threads must be false when using a global thread pool"), so in that mode a model's own
counts are ignored (logged), as in Triton with the same setting. The pools cannot be undone: the
plan is applied once per process, before the first session opens.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from server.settings import OrtThreadSettings

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """What every CPU session of this process gets when its config does not say."""

    global_pool: bool
    # The global pool's size, or each session's default intra-op threads.
    intra_op_threads: int
    inter_op_threads: int = 1
    # Whether per-session pools spin when idle (ORT's default is to spin; the global pool always does).
    spinning: bool = False

    def describe(self, planned_instances: int, cores: int) -> str:
        if self.global_pool:
            return (
                f"ONNX Runtime threads: one global pool of {self.intra_op_threads} intra-op thread(s) "
                f"({self.inter_op_threads} inter-op) shared by {planned_instances} planned CPU instance(s) on {cores} core(s)"
            )
        return (
            f"{planned_instances} CPU instance(s) planned on {cores} core(s): {self.intra_op_threads} intra-op thread(s) "
            f"each by default (idle pools {'spin' if self.spinning else 'sleep'})"
        )


def plan_threads(settings: OrtThreadSettings, cores: int) -> ThreadPlan:
    """The process's thread plan (pure)."""
    return ThreadPlan(bool(settings.global_pool), settings.intra_op_threads or cores, settings.inter_op_threads or 1)


_applied: ThreadPlan | None = None


def apply_thread_plan(plan: ThreadPlan) -> ThreadPlan:
    """Create ONNX Runtime's global pools for a global plan; call before any session opens.

    Returns the plan in force. ORT's global pools cannot be resized or removed, and sessions with
    their own threads cannot join them, so the first plan that involves a global pool (applied
    first, or asked for after per-session plans) decides for the life of the process.
    """
    global _applied
    if _applied is None:
        if plan.global_pool:
            import onnxruntime as ort

            ort.set_global_thread_pool_sizes(plan.intra_op_threads, plan.inter_op_threads)
    elif plan != _applied and (plan.global_pool or _applied.global_pool):
        log.warning("ONNX Runtime threads were set up for this process already; keeping %s", _applied)
        return _applied
    _applied = plan
    return plan

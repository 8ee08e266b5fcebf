"""The Servable seam: what the manager and the service need of a loaded model version, whatever
kind of model it is, and the kinds a repository can hold.

A kind turns a version directory into something that serves in two steps: ``load`` does the
blocking work on a load thread (open sessions, warm up) and returns a ``Loaded``; ``serve``
then builds the Servable on the event loop (its scheduler binds to the loop). The ONNX kind is
the only one today (lifecycle/onnx_servable.py); an ensemble or a stateful model is another
kind registered in ``kinds.py``, with no change to the manager or the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

from server.model_config.spec import ModelSpec
from server.observability.statistics import HistogramSink, ModelStats
from server.proto import model_config_pb2 as mc
from server.scheduling.base import Scheduler


class Servable(Protocol):
    """A READY model version. Every attribute is read on the event loop."""

    name: str
    version: int
    version_str: str
    # The completed config, as ModelConfig answers it.
    config: mc.ModelConfig
    spec: ModelSpec
    stats: ModelStats
    # Where requests go: the version's queue and batcher (or a wrapper around it).
    scheduler: Scheduler
    load_duration_secs: float

    def devices(self) -> list[str]:
        """Where its instances run ("cpu", "cuda:0", ...), for the log line of its model."""
        ...

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain queued and running requests (bounded), then free what it holds."""
        ...


class Loaded(Protocol):
    """The result of a kind's blocking load, handed back to the event loop."""

    config: mc.ModelConfig


LoadedT = TypeVar("LoadedT", bound=Loaded)


class ServableKind(Protocol[LoadedT]):
    """One kind of model: which configs it serves and how it loads them. ``LoadedT`` is what its
    blocking load hands back to the event loop (each kind has its own)."""

    # Triton's platform and backend names for the kind (config.pbtxt's `platform` / `backend`).
    platform: str
    backend: str

    def load(self, config: mc.ModelConfig, name: str, version: int, version_dir: Path, model_dir: Path, network_config: bool) -> LoadedT:
        """Blocking (a load thread): complete and validate the config, open and warm up what
        serves it. Raises ServerError with the reason the version is UNAVAILABLE."""
        ...

    def serve(self, loaded: LoadedT, name: str, version: int, histograms: HistogramSink | None, load_duration_secs: float) -> Servable:
        """On the event loop: the Servable of a finished load."""
        ...

    def discard(self, loaded: LoadedT) -> None:
        """Free a finished load that will not serve (its caller went away)."""
        ...


# A kind whose load type the caller does not know (the registry holds kinds of every load type).
AnyKind = ServableKind[Any]

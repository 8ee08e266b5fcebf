"""The servable kinds this server knows, by Triton platform name: ONNX and ensembles. A new kind
is one entry here; the manager picks the kind from the completed config."""

from __future__ import annotations

from server.errors import ServerError
from server.lifecycle.ensemble_servable import EnsembleKind, MemberDirectory
from server.lifecycle.onnx_servable import OnnxKind
from server.lifecycle.servable import AnyKind
from server.proto import model_config_pb2 as mc
from server.runtime.loader import LoadOptions
from server.scheduling.response_cache import ResponseCache


class Kinds:
    def __init__(self, options: LoadOptions, members: MemberDirectory, response_cache: ResponseCache | None = None) -> None:
        self.onnx = OnnxKind(options, response_cache)
        self.ensemble = EnsembleKind(members)
        self._by_platform: dict[str, AnyKind] = {self.onnx.platform: self.onnx, self.ensemble.platform: self.ensemble}

    def set_load_options(self, options: LoadOptions) -> None:
        self.onnx.options = options

    def for_config(self, config: mc.ModelConfig) -> AnyKind:
        """The kind that serves ``config`` (an empty platform and backend mean ONNX).

        Raises INVALID_ARG naming what the config asks for and what is served.
        """
        platform, backend = config.platform, config.backend
        if platform == self.ensemble.platform and backend:
            raise ServerError.invalid_arg(f"Ensemble model '{config.name}' must have platform type '{platform}' and empty backend type")
        if not platform and (not backend or backend == self.onnx.backend):
            return self.onnx
        kind = self._by_platform.get(platform)
        if kind is None or (backend and backend != kind.backend):
            served = ", ".join(f"platform '{p}' / backend '{k.backend}'" for p, k in self._by_platform.items())
            asked = f"platform '{platform}' / backend '{backend}'"
            raise ServerError.invalid_arg(f"model '{config.name}' has {asked}; ortserve serves {served}")
        return kind

"""Which servable kind serves a config: the ONNX kind by default, the ensemble kind for
``platform: "ensemble"``, a clear refusal otherwise."""

from __future__ import annotations

import pytest

from server.errors import ErrorCode, ServerError
from server.lifecycle.kinds import Kinds
from server.lifecycle.servable import Servable
from server.proto import model_config_pb2 as mc
from server.runtime.loader import LoadOptions
from server.runtime.threads import ThreadPlan


class NoMembers:
    """A member directory that knows no model (choosing a kind never looks members up)."""

    def get(self, name: str, version: str) -> Servable:
        raise ServerError.not_found(f"Request for unknown model: '{name}' is not found")

    def load_error(self, name: str) -> str:
        return ""


def kinds() -> Kinds:
    return Kinds(LoadOptions(default_max_batch_size=4, threads=ThreadPlan(False, 1)), NoMembers())


@pytest.mark.parametrize(
    ("platform", "backend"), [("", ""), ("onnxruntime_onnx", ""), ("", "onnxruntime"), ("onnxruntime_onnx", "onnxruntime")]
)
def test_onnx_names_or_none_choose_the_onnx_kind(platform: str, backend: str) -> None:
    registry = kinds()
    assert registry.for_config(mc.ModelConfig(name="m", platform=platform, backend=backend)) is registry.onnx


@pytest.mark.parametrize(("platform", "backend"), [("tensorrt_plan", ""), ("", "python"), ("onnxruntime_onnx", "tensorrt")])
def test_other_platforms_are_refused_naming_what_is_served(platform: str, backend: str) -> None:
    with pytest.raises(ServerError) as caught:
        kinds().for_config(mc.ModelConfig(name="m", platform=platform, backend=backend))
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == (
        f"model 'm' has platform '{platform}' / backend '{backend}'; "
        "ortserve serves platform 'onnxruntime_onnx' / backend 'onnxruntime', platform 'ensemble' / backend ''"
    )


def test_ensemble_platform_chooses_the_ensemble_kind() -> None:
    registry = kinds()
    assert registry.for_config(mc.ModelConfig(name="e", platform="ensemble")) is registry.ensemble


def test_ensemble_with_a_backend_is_refused_in_tritons_words() -> None:
    with pytest.raises(ServerError) as caught:
        kinds().for_config(mc.ModelConfig(name="e", platform="ensemble", backend="onnxruntime"))
    assert caught.value.message == "Ensemble model 'e' must have platform type 'ensemble' and empty backend type"

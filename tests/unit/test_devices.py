"""Device choices on this machine: what a machine lacks is UNAVAILABLE, what a config gets wrong
INVALID_ARG (run where onnxruntime has no usable CUDA provider; skipped where it has one)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.proto import model_config_pb2 as mc
from server.runtime.devices import device_choices
from server.runtime.gpus import cuda_provider_problem


def config(text: str) -> mc.ModelConfig:
    return text_format.Parse(f'name: "m"\n{text}', mc.ModelConfig())


def refusal(text: str) -> ServerError:
    with pytest.raises(ServerError) as caught:
        device_choices(config(text))
    return caught.value


@pytest.mark.skipif(cuda_provider_problem() is None, reason="this machine has a usable CUDA provider")
def test_kind_gpu_without_a_usable_gpu_is_unavailable_not_a_bad_config() -> None:
    error = refusal('instance_group [ { name: "g" kind: KIND_GPU count: 1 gpus: [ 0 ] } ]')
    assert error.code is ErrorCode.UNAVAILABLE
    assert error.message.startswith("model 'm': instance group 'g' is KIND_GPU, but ")


def test_an_unknown_accelerator_is_a_bad_config() -> None:
    accelerator = 'optimization { execution_accelerators { cpu_execution_accelerator [ { name: "turbo" } ] } }'
    error = refusal(f"instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n{accelerator}")
    assert (error.code, error.message) == (ErrorCode.INVALID_ARG, "model 'm': unknown CPU execution accelerator 'turbo'")


def test_cpu_groups_choose_cpu_instances() -> None:
    choices = device_choices(config("instance_group [ { kind: KIND_CPU count: 2 } ]"))
    assert [choice.label for choice in choices] == ["cpu", "cpu"]

"""config.pbtxt parsing: real Triton configs load, ignored fields are named, syntax errors are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ErrorCode, ServerError
from server.model_config.config_file import ignored_fields, parse_config_text, read_config_file
from server.proto import model_config_pb2 as mc

# A config as people write them for Triton's ONNX backend, with many fields ortserve does not act on.
TRITON_CONFIG = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape: { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "densenet_labels.txt"
  }
]
instance_group [
  {
    count: 2
    kind: KIND_GPU
    gpus: [ 0, 1 ]
    rate_limiter { resources [ { name: "R1", count: 4 } ] priority: 2 }
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY, default_timeout_microseconds: 5000, max_queue_size: 64 }
}
optimization {
  graph: { level: 1 }
  cuda { graphs: true, busy_wait_events: true, output_copy_stream: true }
  execution_accelerators {
    gpu_execution_accelerator: [
      {
        name: "tensorrt"
        parameters { key: "precision_mode" value: "FP16" }
        parameters { key: "max_workspace_size_bytes" value: "1073741824" }
      }
    ]
  }
  input_pinned_memory { enable: false }
}
parameters { key: "intra_op_thread_count" value: { string_value: "4" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "data_0" value: { data_type: TYPE_FP32, dims: [ 3, 224, 224 ], zero_data: true } }
  }
]
response_cache { enable: true }
model_repository_agents { agents [ { name: "checksum", parameters { key: "MD5:model.onnx" value: "abc" } } ] }
metric_tags { key: "team" value: "vision" }
model_operations { op_library_filename: "libcustom.so" }
cc_model_filenames { key: "7.5" value: "model.plan" }
"""

# sequence_batching shares a oneof with dynamic_batching, so it gets a config of its own.
SEQUENCE_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [ { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] } ]
  oldest { max_candidate_sequences: 4 }
}
"""


def test_triton_config_parses_with_values() -> None:
    config = parse_config_text(TRITON_CONFIG, "densenet_onnx/config.pbtxt")
    assert config.name == "densenet_onnx"
    assert config.max_batch_size == 8
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert list(config.input[0].dims) == [3, 224, 224]
    assert list(config.input[0].reshape.shape) == [1, 3, 224, 224]
    assert config.input[0].format == mc.ModelInput.FORMAT_NCHW
    assert config.output[0].label_filename == "densenet_labels.txt"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert config.optimization.cuda.graphs is True
    assert config.parameters["intra_op_thread_count"].string_value == "4"
    assert config.metric_tags["team"] == "vision"


def test_ignored_fields_names_top_level_fields_not_acted_on() -> None:
    config = parse_config_text(TRITON_CONFIG, "config.pbtxt")
    assert ignored_fields(config) == ["cc_model_filenames", "metric_tags", "model_operations", "model_repository_agents"]


def test_sequence_batching_parses_and_is_acted_on() -> None:
    config = parse_config_text(SEQUENCE_CONFIG, "config.pbtxt")
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    assert config.sequence_batching.oldest.max_candidate_sequences == 4
    assert ignored_fields(config) == []


def test_acted_on_fields_are_not_reported() -> None:
    config = parse_config_text('name: "m" max_batch_size: 2 dynamic_batching {} model_transaction_policy { decoupled: false }', "c")
    assert ignored_fields(config) == []


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank-lines", "comment"])
def test_empty_file_is_empty_config(text: str) -> None:
    assert parse_config_text(text, "config.pbtxt") == mc.ModelConfig()


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ('name: "m"\nmax_batch_size: eight\n', "line 2 column 17"),
        ('name: "m"\n\nbogus_field: 1\n', "line 3 column 1"),
        ('input [ { name: "x" data_type: TYPE_FLOAT } ]', "line 1 column 32"),
        ('name: "m"\ninput [ { name: "x" ', "line 2 column 17"),
        ('name: "m"\nmax_batch_size: 1\nmax_batch_size: 2\n', "line 3 column 17"),
    ],
    ids=["bad-int", "unknown-field", "unknown-enum", "unterminated", "repeated-scalar"],
)
def test_syntax_error_names_file_line_and_column(text: str, location: str) -> None:
    with pytest.raises(ServerError) as caught:
        parse_config_text(text, "/repo/m/config.pbtxt")
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message.startswith(f"failed to parse /repo/m/config.pbtxt: {location}: ")


def test_syntax_error_detail_is_not_prefixed_twice() -> None:
    with pytest.raises(ServerError) as caught:
        parse_config_text("bogus_field: 1", "c.pbtxt")
    # protobuf's own "1:1 : " prefix is replaced by the words, not repeated.
    assert caught.value.message == (
        'failed to parse c.pbtxt: line 1 column 1: Message type "inference.ModelConfig" has no field named "bogus_field".'
    )


def test_read_config_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nmax_batch_size: -\n')
    with pytest.raises(ServerError, match=rf"^failed to parse {path}: line 2 column"):
        read_config_file(path)


def test_read_config_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nmax_batch_size: 3\n')
    assert read_config_file(path).max_batch_size == 3


def test_read_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff"')
    with pytest.raises(ServerError, match=rf"^failed to read {path}: ") as caught:
        read_config_file(path)
    assert caught.value.code is ErrorCode.INVALID_ARG

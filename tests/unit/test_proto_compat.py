"""Our hand-written .proto files must stay wire-compatible with tritonclient's.

Ours live in a private descriptor pool and tritonclient's in the default pool,
so the two schemas are compared descriptor by descriptor, and messages are
moved between them as bytes, the way they travel on the wire.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, text_format
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
)
from google.protobuf.internal import api_implementation
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from tritonclient.grpc import model_config_pb2 as their_config
from tritonclient.grpc import service_pb2 as their_service

from server.proto import _pool
from server.proto import grpc_service_pb2 as our_service
from server.proto import model_config_pb2 as our_config

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fields and messages we declare that the pinned tritonclient (pyproject.toml) lacks, e.g. ones of
# a Triton release newer than it, declared so that newer config.pbtxt files still parse. Keep this
# the only list of deliberate differences; tritonclient 2.73 knows every field we declare.
EXTRA_FIELDS: frozenset[str] = frozenset()
EXTRA_MESSAGES: frozenset[str] = frozenset()

FILE_PAIRS = (
    (our_config.DESCRIPTOR, their_config.DESCRIPTOR),
    (our_service.DESCRIPTOR, their_service.DESCRIPTOR),
)


# ---- Descriptor walking ----------------------------------------------------


def _walk_messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:  # map entries are nested types too
        yield from _walk_messages(nested)


def _messages(file: FileDescriptor) -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}
    for top in file.message_types_by_name.values():
        found.update((m.full_name, m) for m in _walk_messages(top))
    return found


def _enums(file: FileDescriptor) -> dict[str, EnumDescriptor]:
    found = {e.full_name: e for e in file.enum_types_by_name.values()}
    for message in _messages(file).values():
        found.update((e.full_name, e) for e in message.enum_types)
    return found


def _all(kind: str) -> tuple[dict, dict]:
    walk = _messages if kind == "messages" else _enums
    ours: dict = {}
    theirs: dict = {}
    for our_file, their_file in FILE_PAIRS:
        ours.update(walk(our_file))
        theirs.update(walk(their_file))
    return ours, theirs


OUR_MESSAGES, THEIR_MESSAGES = _all("messages")
OUR_ENUMS, THEIR_ENUMS = _all("enums")


def _fields(messages: dict[str, Descriptor]) -> dict[str, FieldDescriptor]:
    return {f.full_name: f for m in messages.values() for f in m.fields}


OUR_FIELDS = _fields(OUR_MESSAGES)
THEIR_FIELDS = _fields(THEIR_MESSAGES)


def _type_name(field: FieldDescriptor) -> str | None:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return None


def _signature(field: FieldDescriptor) -> dict[str, object]:
    # Everything that decides how the field is encoded, decoded or printed.
    oneof = field.containing_oneof
    return {
        "number": field.number,
        "name": field.name,
        "type": field.type,
        "repeated": field.is_repeated,
        "required": field.is_required,
        "type_name": _type_name(field),
        "oneof": oneof.name if oneof is not None else None,
        "has_presence": field.has_presence,
        "json_name": field.json_name,
        # Explicit options such as [packed = false] change the encoding.
        "options": field.GetOptions().SerializeToString(),
    }


# ---- Files -----------------------------------------------------------------


@pytest.mark.parametrize(("ours", "theirs"), FILE_PAIRS, ids=lambda f: f.name)
def test_file_identity(ours: FileDescriptor, theirs: FileDescriptor) -> None:
    # Same file names and package keep reflection and imports interchangeable.
    assert (ours.name, ours.package) == (theirs.name, theirs.package)
    assert [d.name for d in ours.dependencies] == [d.name for d in theirs.dependencies]


def test_ours_live_in_the_private_pool() -> None:
    assert our_service.DESCRIPTOR.pool is _pool.POOL
    assert our_config.DESCRIPTOR.pool is _pool.POOL
    if api_implementation.Type() == "python":
        # protobuf's builder registers every generated class with the default
        # symbol database, which the pure-python runtime (only) mirrors into
        # the default pool, shadowing tritonclient's names there. Harmless for
        # serving; name lookups in the default pool are all it affects.
        pytest.skip("pure-python protobuf re-registers names in the default pool")
    default = descriptor_pool.Default()
    found = default.FindMessageTypeByName("inference.ModelInferRequest")
    assert found is their_service.ModelInferRequest.DESCRIPTOR


# ---- Messages and fields ---------------------------------------------------


def test_extras_are_really_extra() -> None:
    # Once tritonclient grows one of these, drop it from the allowlist so the
    # normal field comparison covers it.
    assert OUR_FIELDS.keys() >= EXTRA_FIELDS
    assert not EXTRA_FIELDS & THEIR_FIELDS.keys()
    assert OUR_MESSAGES.keys() >= EXTRA_MESSAGES
    assert not EXTRA_MESSAGES & THEIR_MESSAGES.keys()


def test_no_unlisted_messages() -> None:
    unlisted = OUR_MESSAGES.keys() - THEIR_MESSAGES.keys() - EXTRA_MESSAGES
    assert not unlisted, f"messages tritonclient does not know: {sorted(unlisted)}"


@pytest.mark.parametrize("name", sorted(THEIR_MESSAGES))
def test_message_declared(name: str) -> None:
    theirs = THEIR_MESSAGES[name]
    ours = OUR_MESSAGES.get(name)
    assert ours is not None, f"message {name} is missing from our protos"
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry, name
    our_oneofs = {o.name: sorted(f.name for f in o.fields) for o in ours.oneofs}
    their_oneofs = {o.name: sorted(f.name for f in o.fields) for o in theirs.oneofs}
    assert our_oneofs == their_oneofs, f"oneofs of {name} differ"


@pytest.mark.parametrize("name", sorted(OUR_FIELDS.keys() | THEIR_FIELDS.keys()))
def test_field_matches(name: str) -> None:
    ours = OUR_FIELDS.get(name)
    theirs = THEIR_FIELDS.get(name)
    assert ours is not None, f"{name} is sent by tritonclient but we drop it"
    if theirs is None:
        parent = ours.containing_type.full_name
        assert name in EXTRA_FIELDS or parent in EXTRA_MESSAGES, (
            f"{name} is not in the pinned tritonclient; add it to EXTRA_FIELDS if that is deliberate"
        )
        return
    assert _signature(ours) == _signature(theirs), name


# ---- Enums -----------------------------------------------------------------


def test_no_unlisted_enums() -> None:
    assert OUR_ENUMS.keys() == THEIR_ENUMS.keys()


@pytest.mark.parametrize("name", sorted(THEIR_ENUMS))
def test_enum_matches(name: str) -> None:
    ours = OUR_ENUMS.get(name)
    assert ours is not None, f"enum {name} is missing from our protos"
    their_values = {v.name: v.number for v in THEIR_ENUMS[name].values}
    assert {v.name: v.number for v in ours.values} == their_values, name


# ---- Service ---------------------------------------------------------------

OUR_SERVICE = our_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
THEIR_SERVICE = their_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def test_service_has_same_methods() -> None:
    assert OUR_SERVICE.full_name == THEIR_SERVICE.full_name
    assert [m.name for m in OUR_SERVICE.methods] == [m.name for m in THEIR_SERVICE.methods]


@pytest.mark.parametrize("name", [m.name for m in THEIR_SERVICE.methods])
def test_method_matches(name: str) -> None:
    ours = OUR_SERVICE.methods_by_name.get(name)
    theirs = THEIR_SERVICE.methods_by_name[name]
    assert ours is not None, f"rpc {name} is missing"

    def shape(method: MethodDescriptor) -> tuple[str, str, bool, bool]:
        return (
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming,
            method.server_streaming,
        )

    assert shape(ours) == shape(theirs), name


# ---- Round trips over the wire ---------------------------------------------


def _assert_no_unknown_fields(message: Message, path: str) -> None:
    unknown = UnknownFieldSet(message)
    numbers = sorted(field.field_number for field in unknown)
    assert not numbers, f"{path}: unknown field numbers {numbers}"


def _assert_same_value(field: FieldDescriptor, a: object, b: object, path: str) -> None:
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        assert sorted(a) == sorted(b), f"{path}: map keys differ"
        value_field = field.message_type.fields_by_name["value"]
        for key in a:
            _assert_same_value(value_field, a[key], b[key], f"{path}[{key!r}]")
    elif field.is_repeated and is_message:
        assert len(a) == len(b), f"{path}: lengths differ"
        for index, (item_a, item_b) in enumerate(zip(a, b, strict=True)):
            assert_same_message(item_a, item_b, f"{path}[{index}]")
    elif field.is_repeated:
        assert list(a) == list(b), f"{path} differs"
    elif is_message:
        assert_same_message(a, b, path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_message(a: Message, b: Message, path: str = "") -> None:
    """Field-by-field equality of two messages from different pools."""
    path = path or a.DESCRIPTOR.full_name
    assert a.DESCRIPTOR.full_name == b.DESCRIPTOR.full_name, path
    _assert_no_unknown_fields(a, path)
    _assert_no_unknown_fields(b, path)
    fields_a = [f.name for f, _ in a.ListFields()]
    fields_b = [f.name for f, _ in b.ListFields()]
    assert fields_a == fields_b, f"{path}: set fields differ"
    for field, value in a.ListFields():
        other = getattr(b, field.name)
        _assert_same_value(field, value, other, f"{path}.{field.name}")


def _transfer(message: Message, target_class: type[Message]) -> Message:
    parsed = target_class.FromString(message.SerializeToString())
    assert_same_message(parsed, message)
    # Both encoders must also produce the same bytes.
    assert parsed.SerializeToString(deterministic=True) == message.SerializeToString(deterministic=True)
    return parsed


def _fill_parameters(target: object, module: object) -> None:
    # One entry of every InferParameter kind.
    target["bool"].CopyFrom(module.InferParameter(bool_param=True))
    target["int64"].CopyFrom(module.InferParameter(int64_param=-(2**40)))
    target["string"].CopyFrom(module.InferParameter(string_param="héllo"))
    target["double"].CopyFrom(module.InferParameter(double_param=0.125))
    target["uint64"].CopyFrom(module.InferParameter(uint64_param=2**63 + 1))


def _their_contents() -> their_service.InferTensorContents:
    return their_service.InferTensorContents(
        bool_contents=[True, False],
        int_contents=[-1, 2],
        int64_contents=[-(2**40)],
        uint_contents=[7],
        uint64_contents=[2**64 - 1],
        fp32_contents=[1.5, -2.25],
        fp64_contents=[1e-300],
        bytes_contents=[b"", b"\x00\xff"],
    )


def test_infer_request_tritonclient_to_ours() -> None:
    request = their_service.ModelInferRequest(model_name="resnet", model_version="2", id="42")
    _fill_parameters(request.parameters, their_service)
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[-1, 3])
    _fill_parameters(tensor.parameters, their_service)
    typed = request.inputs.add(name="INPUT1", datatype="INT32", shape=[2])
    typed.contents.CopyFrom(_their_contents())
    output = request.outputs.add(name="OUTPUT0")
    output.parameters["classification"].int64_param = 3
    request.raw_input_contents.extend([b"\x00\x00\xc0\x3f" * 3, b""])

    parsed = _transfer(request, our_service.ModelInferRequest)
    assert parsed.parameters["uint64"].WhichOneof("parameter_choice") == "uint64_param"


def test_infer_response_ours_to_tritonclient() -> None:
    response = our_service.ModelInferResponse(model_name="resnet", model_version="2", id="42")
    _fill_parameters(response.parameters, our_service)
    tensor = response.outputs.add(name="OUTPUT0", datatype="BYTES", shape=[1, 2])
    _fill_parameters(tensor.parameters, our_service)
    tensor.contents.MergeFromString(_their_contents().SerializeToString())
    response.raw_output_contents.extend([b"\x01\x00\x00\x00a\x00\x00\x00\x00"])

    stream = our_service.ModelStreamInferResponse(infer_response=response)
    _transfer(stream, their_service.ModelStreamInferResponse)
    _transfer(response, their_service.ModelInferResponse)


CONFIG_PBTXT = """
name: "resnet"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
max_batch_size: 8
version_policy { specific { versions: [1, 3] } }
input [{ name: "INPUT0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [3, -1, -1]
         reshape { shape: [3, 224, 224] } optional: true }]
output [{ name: "OUTPUT0" data_type: TYPE_STRING dims: [1000]
          label_filename: "labels.txt" }]
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5
                         allow_timeout_override: true max_queue_size: 16 }
  priority_queue_policy { key: 2 value { max_queue_size: 4 } }
}
instance_group [{
  name: "gpu_group" kind: KIND_GPU count: 2 gpus: [0, 1]
  rate_limiter { resources [{ name: "R1" global: true count: 2 }] priority: 1 }
  secondary_devices [{ kind: KIND_NVDLA device_id: 1 }]
  profile: ["p0"] passive: false host_policy: "numa0"
}]
optimization {
  graph { level: -1 }
  priority: PRIORITY_MAX
  cuda {
    graphs: true
    graph_spec [{ batch_size: 4
                  input { key: "INPUT0" value { dim: [3, 224, 224] } }
                  graph_lower_bound { batch_size: 1
                    input { key: "INPUT0" value { dim: [3, 1, 1] } } } }]
  }
  execution_accelerators {
    gpu_execution_accelerator [{ name: "tensorrt"
      parameters { key: "precision_mode" value: "FP16" } }]
    cpu_execution_accelerator [{ name: "openvino" }]
  }
  input_pinned_memory { enable: true }
  gather_kernel_buffer_threshold: 3
}
parameters { key: "intra_op_thread_count" value { string_value: "4" } }
metric_tags { key: "team" value: "vision" }
model_warmup [{ name: "w" batch_size: 1 count: 2
  inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [3, 8, 8]
                                 random_data: true } } }]
model_transaction_policy { decoupled: false }
response_cache { enable: true }
"""


def test_model_config_ours_to_tritonclient() -> None:
    config = text_format.Parse(CONFIG_PBTXT, our_config.ModelConfig())
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    response = our_service.ModelConfigResponse(config=config)
    parsed = _transfer(response, their_service.ModelConfigResponse)
    # Back again, and the text form must read the same in both schemas.
    _transfer(parsed, our_service.ModelConfigResponse)
    their_text = text_format.MessageToString(parsed.config)
    assert their_text == text_format.MessageToString(config)


def test_newer_fields_reach_tritonclient() -> None:
    # Fields newer than Triton 2.41 (marked "(newer)" in protos/) arrive intact, none of them unknown.
    config = text_format.Parse(
        'name: "m" runtime: "model.py" '
        'input { name: "I" is_non_linear_format_io: true } '
        "model_metrics { metric_control { metric_identifier { family: "
        '"nv_inference_first_response_histogram_ms" } '
        "histogram_options { buckets: [1, 10] } } } "
        'ensemble_scheduling { max_inflight_requests: 4 step { model_name: "a" model_version: -1 } }',
        our_config.ModelConfig(),
    )
    parsed = _transfer(config, their_config.ModelConfig)
    assert parsed.ensemble_scheduling.max_inflight_requests == 4
    assert parsed.model_metrics.metric_control[0].histogram_options.buckets == [1, 10]


# ---- Living next to tritonclient and grpc health -----------------------------

_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib
    import sys

    from google.protobuf import descriptor_pool
    from google.protobuf.internal import api_implementation

    modules = {{}}
    for name in {order!r}:
        modules[name] = importlib.import_module(name)
    ours = modules["server.proto.grpc_service_pb2"]
    theirs = modules["tritonclient.grpc.service_pb2"]
    health = modules["grpc_health.v1.health_pb2"]
    importlib.import_module("server.proto.grpc_service_pb2_grpc")

    ours.ModelInferRequest(model_name="m")
    theirs.ModelInferRequest(model_name="m")
    health.HealthCheckRequest(service="")
    default = descriptor_pool.Default()
    # Only upb/cpp keep the default pool untouched (see the pool test).
    if api_implementation.Type() != "python":
        found = default.FindMessageTypeByName("inference.ModelInferRequest")
        assert found is theirs.ModelInferRequest.DESCRIPTOR
    found = default.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")
    assert found is health.HealthCheckRequest.DESCRIPTOR
    print("ok")
    """
)

IMPORT_ORDERS = (
    (
        "tritonclient.grpc.service_pb2",
        "grpc_health.v1.health_pb2",
        "server.proto.grpc_service_pb2",
    ),
    (
        "server.proto.grpc_service_pb2",
        "grpc_health.v1.health_pb2",
        "tritonclient.grpc.service_pb2",
    ),
)


@pytest.mark.parametrize("order", IMPORT_ORDERS, ids=["triton-first", "ours-first"])
def test_import_alongside_tritonclient_and_health(order: tuple[str, ...]) -> None:
    # A fresh interpreter, because this process has imported everything.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK.format(order=order)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

"""The pure parts of the process boundary: ring allocation, framing, descriptors and tensors in
shared memory, which methods travel how, errors on the wire, --workers sizing."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from server.cli import parse_settings
from server.errors import ErrorCode, FailureReason, ServerError
from server.remote.arena import ALIGN, Arena, RingAllocator
from server.remote.frames import FrameReader, encode
from server.remote.methods import LOCAL, service_methods
from server.remote.tensors import ArenaWriter, pack_request, pack_response, unpack_request, unpack_response
from server.remote.wire_errors import error_from_wire, error_to_wire
from server.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from server.workers.sizing import auto_workers

# ---- the ring allocator -----------------------------------------------------------------------


def test_blocks_are_aligned_and_do_not_overlap() -> None:
    ring = RingAllocator(1024)
    offsets = [ring.allocate(size) for size in (1, 100, 64)]
    assert offsets == [0, ALIGN, 3 * ALIGN]


def test_a_full_ring_refuses_and_freed_space_at_the_tail_is_reused() -> None:
    ring = RingAllocator(4 * ALIGN)
    first, second, third = (ring.allocate(ALIGN) for _ in range(3))
    assert ring.allocate(2 * ALIGN) is None  # one block left at the end
    ring.free(first)  # type: ignore[arg-type]
    ring.free(second)  # type: ignore[arg-type]
    assert ring.allocate(2 * ALIGN) == 0  # wraps to the start, which is free now
    assert ring.allocate(ALIGN) is None  # the gap at the end waits until the tail passes it
    ring.free(third)  # type: ignore[arg-type]
    assert ring.allocate(2 * ALIGN) == 2 * ALIGN


def test_a_block_freed_out_of_order_waits_for_the_older_one() -> None:
    ring = RingAllocator(3 * ALIGN)
    old, young, _ = (ring.allocate(ALIGN) for _ in range(3))
    ring.free(young)  # type: ignore[arg-type]
    assert ring.allocate(ALIGN) is None  # the oldest block still holds the space behind it
    ring.free(old)  # type: ignore[arg-type]
    assert ring.allocate(2 * ALIGN) == 0


def test_an_empty_ring_starts_over_and_refuses_what_cannot_fit() -> None:
    ring = RingAllocator(2 * ALIGN)
    ring.free(ring.allocate(ALIGN))  # type: ignore[arg-type]
    assert ring.allocate(2 * ALIGN) == 0
    assert RingAllocator(ALIGN).allocate(ALIGN + 1) is None
    with pytest.raises(KeyError):
        ring.free(ALIGN)


# ---- frames -------------------------------------------------------------------------------------


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    stream = encode([("a", 1), ("b", 2)]) + encode([("c", b"x" * 5000)])
    reader, seen = FrameReader(), []
    for start in range(0, len(stream), 7):
        seen += reader.feed(stream[start : start + 7])
    assert seen == [("a", 1), ("b", 2), ("c", b"x" * 5000)]


# ---- requests and responses in shared memory ------------------------------------------------------


@pytest.fixture
def arena() -> Arena:
    return Arena.create("test-arena", 1 << 20)


def test_a_request_travels_with_its_fields_and_tensors_viewing_the_arena(arena: Arena) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    request = InferRequest(
        "simple",
        "1",
        "id-7",
        [
            InferInput("INPUT0", "INT32", (1, 16), raw=a.tobytes(), parameters={"p": 1}),
            InferInput("INPUT1", "INT32", (1, 16), decode=lambda: a + 1),
            InferInput("TEXT", "BYTES", (1, 2), array=np.array([["x", "yz"]], dtype=object)),
            InferInput("SHM", "INT32", (1, 16), parameters={"shared_memory_region": "r"}),
        ],
        [RequestedOutput("OUTPUT0", class_count=2)],
        {"priority": 1},
        deadline=123.5,
        size_bytes=128,
    )
    writer = ArenaWriter(arena)
    descriptor, block = pack_request(request, writer)
    released: list[int] = []
    received = unpack_request(descriptor, arena, released.append)
    assert block is not None and (received.model_name, received.model_version, received.id) == ("simple", "1", "id-7")
    assert (received.outputs, received.parameters, received.deadline, received.size_bytes) == (request.outputs, {"priority": 1}, 123.5, 128)
    raw, decoded, text, shared = received.inputs
    assert bytes(raw.raw) == a.tobytes() and raw.parameters == {"p": 1}  # type: ignore[arg-type]
    np.testing.assert_array_equal(decoded.array, a + 1)  # decoded in the frontend, an array here
    assert text.array is not None and text.array.tolist() == [["x", "yz"]]
    assert (shared.raw, shared.array, shared.decode, shared.parameters) == (None, None, None, {"shared_memory_region": "r"})
    assert released == []
    del received, raw, decoded, text, shared
    gc.collect()
    assert released == [block[0]]  # the last view gone: the block goes back to the frontend


def test_a_decoding_error_is_raised_when_the_core_decodes_that_input(arena: Arena) -> None:
    def refuse() -> np.ndarray:
        raise ServerError.invalid_arg("unexpected number of elements")

    descriptor, _ = pack_request(InferRequest("m", inputs=[InferInput("x", "INT32", (2,), decode=refuse)]), ArenaWriter(arena))
    item = unpack_request(descriptor, arena, lambda offset: None).inputs[0]
    assert item.decode is not None
    with pytest.raises(ServerError, match="unexpected number of elements"):
        item.decode()


def test_tensors_that_do_not_fit_travel_with_the_descriptor(arena: Arena) -> None:
    big = np.ones(2 << 20, dtype=np.uint8)
    descriptor, block = pack_request(InferRequest("m", inputs=[InferInput("x", "UINT8", big.shape, raw=big.tobytes())]), ArenaWriter(arena))
    assert block is None
    assert bytes(unpack_request(descriptor, arena, lambda offset: None).inputs[0].raw) == big.tobytes()  # type: ignore[arg-type]


def test_a_response_travels_with_views_that_free_their_block_when_dropped(arena: Arena) -> None:
    writer = ArenaWriter(arena)
    outputs = [
        InferOutput("y", "FP32", (2, 3), np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2].copy()),
        InferOutput("s", "BYTES", (1,), np.array(["a"], dtype=object)),
    ]
    descriptor, block = pack_response(InferResponse("m", "1", "id", outputs, {"sequence_end": True}), writer)
    freed: list[int] = []
    response = unpack_response(descriptor, arena, freed.append)
    np.testing.assert_array_equal(response.outputs[0].array, [[0, 2], [3, 5]])
    assert response.outputs[1].array.tolist() == ["a"] and response.parameters == {"sequence_end": True}
    del response
    gc.collect()
    assert block is not None and freed == [block[0]]
    writer.free(block[0])
    assert writer.allocator.used_blocks == 0


# ---- methods, errors, sizing --------------------------------------------------------------------


def test_every_public_service_method_has_a_way_across() -> None:
    from server.service import InferenceService

    methods = service_methods(InferenceService)
    public = {name for name in dir(InferenceService) if not name.startswith("_")}
    assert public == LOCAL | methods.asynchronous | methods.synchronous | methods.static | methods.properties
    assert {"load_model", "unload_model", "repository_index"} <= methods.asynchronous
    assert {"statistics", "model_config", "model_metadata"} <= methods.synchronous


def test_a_method_added_to_the_service_is_forwarded_by_its_kind() -> None:
    class Extended:
        async def register_region(self, name: str) -> None: ...

        def trace_setting(self, model: str) -> dict[str, str]:
            return {}

    methods = service_methods(Extended)
    assert methods.asynchronous == {"register_region"} and methods.synchronous == {"trace_setting"}


def test_errors_keep_code_message_and_reason_and_anything_else_is_internal() -> None:
    error = error_from_wire(error_to_wire(ServerError(ErrorCode.UNAVAILABLE, "Exceeds maximum queue size", FailureReason.REJECTED)))
    assert (error.code, error.message, error.reason) == (ErrorCode.UNAVAILABLE, "Exceeds maximum queue size", FailureReason.REJECTED)
    assert error_from_wire(error_to_wire(ValueError("boom"))).code is ErrorCode.INTERNAL


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (64, 8)])
def test_auto_workers_serves_small_machines_in_one_process(cores: int, workers: int) -> None:
    assert auto_workers(cores) == workers


def test_workers_flag(tmp_path: Path) -> None:
    assert parse_settings(["--model-repository", str(tmp_path), "--workers", "3"], {}).workers == 3
    assert parse_settings(["--model-repository", str(tmp_path)], {"ORTSERVE_WORKERS": "2"}).workers == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--workers", "0"], "--workers must be >= 1"), (["--workers", "2", "--grpc-port", "0"], "fixed HTTP and gRPC ports")],
)
def test_bad_workers_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--model-repository", str(tmp_path), *flags], {})
    assert message in capsys.readouterr().err

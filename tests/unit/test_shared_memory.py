"""The system shared-memory registry and one request's use of it, on real POSIX shared memory:
only objects in /dev/shm, every offset and size checked, unregistering never unmaps what a
request still holds."""

from __future__ import annotations

import gc
import os
import struct
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from server.errors import ErrorCode, ServerError
from server.service.shared_memory import DISABLED_MESSAGE, SHM_DIRECTORY, SharedMemoryLimits, SharedMemoryRegistry
from server.service.shared_memory_io import attach_shared_memory, shared_memory_ref
from server.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

SIZE = 8192


@pytest.fixture
def segment() -> Iterator[shared_memory.SharedMemory]:
    """A fresh POSIX shared-memory object of SIZE bytes, removed afterwards."""
    created = shared_memory.SharedMemory(f"ortserve-test-{uuid.uuid4().hex[:12]}", create=True, size=SIZE)
    try:
        yield created
    finally:
        created.close()
        created.unlink()


def key_of(segment: shared_memory.SharedMemory) -> str:
    return "/" + segment.name.lstrip("/")


def registry(max_regions: int = 8, max_bytes: int = 1 << 30) -> SharedMemoryRegistry:
    return SharedMemoryRegistry(SharedMemoryLimits(True, max_regions, max_bytes))


def refused(call: object, code: ErrorCode) -> str:
    with pytest.raises(ServerError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code is code, caught.value
    return caught.value.message


def test_a_registered_region_is_listed_and_its_bytes_are_the_objects(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 4096, 64)
    segment.buf[4096 + 8 : 4096 + 12] = b"abcd"
    assert [(s.name, s.key, s.offset, s.byte_size) for s in shm.status("")] == [("r", key_of(segment), 4096, 64)]
    assert bytes(shm.view("r", 8, 4)) == b"abcd"
    assert shm.mapped_bytes == 64 and shm.region_count == 1


def test_a_region_may_start_anywhere_in_its_object(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 4099, 10)  # not on a page boundary
    segment.buf[4099:4101] = b"xy"
    assert bytes(shm.view("r", 0, 2)) == b"xy"


@pytest.mark.parametrize(
    ("offset", "byte_size"), [(0, SIZE + 1), (SIZE, 1), (SIZE - 4, 8), (0, 0)], ids=["too-large", "at-end", "past-end", "empty"]
)
def test_a_region_outside_its_object_is_refused(segment: shared_memory.SharedMemory, offset: int, byte_size: int) -> None:
    message = refused(lambda: registry().register("r", key_of(segment), offset, byte_size), ErrorCode.INVALID_ARG)
    assert message == "failed to register shared memory region 'r': invalid args"


@pytest.mark.parametrize(
    "key",
    ["/../../etc/passwd", "../etc/passwd", "/dev/shm/x", "a/b", "/", "", ".", "..", "n" * 256],
    ids=["traversal", "relative", "absolute-path", "subdirectory", "slash", "empty", "dot", "dotdot", "too-long"],
)
def test_a_key_that_is_not_a_posix_shared_memory_name_is_refused(key: str) -> None:
    message = refused(lambda: registry().register("r", key, 0, 8), ErrorCode.INTERNAL)
    assert message.startswith(f"Unable to open shared memory region: '{key}'")


def test_a_key_that_names_no_object_is_refused() -> None:
    message = refused(lambda: registry().register("r", "/ortserve-no-such-object", 0, 8), ErrorCode.INTERNAL)
    assert message.startswith("Unable to open shared memory region: '/ortserve-no-such-object'")


def test_a_symlink_in_dev_shm_is_not_followed(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "secret")
    with open(target, "wb") as file:
        file.write(b"s" * 4096)
    name = f"ortserve-test-link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, os.path.join(SHM_DIRECTORY, name))
    try:
        message = refused(lambda: registry().register("r", "/" + name, 0, 8), ErrorCode.INTERNAL)
    finally:
        os.unlink(os.path.join(SHM_DIRECTORY, name))
    assert message.startswith(f"Unable to open shared memory region: '/{name}'")


def test_a_fifo_in_dev_shm_is_refused() -> None:
    name = f"ortserve-test-fifo-{uuid.uuid4().hex[:8]}"
    os.mkfifo(os.path.join(SHM_DIRECTORY, name))
    try:
        message = refused(lambda: registry().register("r", "/" + name, 0, 8), ErrorCode.INTERNAL)
    finally:
        os.unlink(os.path.join(SHM_DIRECTORY, name))
    assert message == f"Unable to open shared memory region: '/{name}' (not a shared-memory object)"


def test_a_name_registered_twice_is_refused(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    message = refused(lambda: shm.register("r", key_of(segment), 64, 64), ErrorCode.ALREADY_EXISTS)
    assert message == "shared memory region 'r' already in manager"


def test_the_region_count_and_mapped_bytes_are_bounded(segment: shared_memory.SharedMemory) -> None:
    shm = registry(max_regions=2, max_bytes=4096)
    shm.register("a", key_of(segment), 0, 2048)
    assert "(--max-shm-bytes)" in refused(lambda: shm.register("b", key_of(segment), 0, 2049), ErrorCode.UNAVAILABLE)
    shm.register("b", key_of(segment), 0, 2048)
    assert "(--max-shm-regions)" in refused(lambda: shm.register("c", key_of(segment), 0, 1), ErrorCode.UNAVAILABLE)


@pytest.mark.parametrize(
    ("offset", "byte_size", "message"),
    [
        (64, 1, "Invalid offset for shared memory region: 'r'"),
        (-1, 1, "Invalid offset for shared memory region: 'r'"),
        (60, 8, "Invalid offset + byte size for shared memory region: 'r'"),
        (0, 65, "Invalid offset + byte size for shared memory region: 'r'"),
        (32, 2**64 - 32, "Invalid offset + byte size for shared memory region: 'r'"),
    ],
    ids=["offset-at-end", "negative-offset", "past-end", "too-large", "overflowing"],
)
def test_a_view_outside_the_region_is_refused(segment: shared_memory.SharedMemory, offset: int, byte_size: int, message: str) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    assert refused(lambda: shm.view("r", offset, byte_size), ErrorCode.INVALID_ARG) == message


def test_an_unknown_region_is_not_found() -> None:
    shm = registry()
    assert refused(lambda: shm.view("nope", 0, 1), ErrorCode.NOT_FOUND) == "Unable to find shared memory region: 'nope'"
    assert refused(lambda: shm.status("nope"), ErrorCode.NOT_FOUND) == "Unable to find system shared memory region: 'nope'"
    shm.unregister("nope")  # no error, as in Triton


def test_an_object_made_smaller_after_registration_is_refused_before_it_is_read(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 4096, 4096)
    fd = os.open(os.path.join(SHM_DIRECTORY, segment.name.lstrip("/")), os.O_RDWR)
    try:
        os.ftruncate(fd, 4096)
        assert "was made smaller" in refused(lambda: shm.view("r", 0, 8), ErrorCode.INVALID_ARG)
    finally:
        os.ftruncate(fd, SIZE)
        os.close(fd)


def test_unregistering_a_region_in_use_keeps_it_mapped_until_its_last_view_goes(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    held = np.frombuffer(shm.view("r", 0, 16), dtype=np.float32)  # what a queued request holds
    segment.buf[0:4] = struct.pack("<f", 2.5)
    shm.unregister("r")
    assert shm.status("") == [] and shm.region_count == 0
    assert held[0] == 2.5  # still mapped: reading it is safe
    assert shm.mapped_bytes == 64
    del held
    gc.collect()
    assert shm.mapped_bytes == 0
    shm.register("r", key_of(segment), 0, 64)  # the name is free again


def test_unregistering_everything(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("a", key_of(segment), 0, 64)
    shm.register("b", key_of(segment), 64, 64)
    shm.unregister("")
    assert shm.status("") == [] and shm.mapped_bytes == 0


def test_everything_is_refused_while_the_extension_is_off(segment: shared_memory.SharedMemory) -> None:
    off = SharedMemoryRegistry()
    for call in (
        lambda: off.register("r", key_of(segment), 0, 64),
        lambda: off.status(""),
        lambda: off.unregister(""),
        lambda: off.view("r", 0, 1),
    ):
        assert refused(call, ErrorCode.UNSUPPORTED) == DISABLED_MESSAGE


# ---- one request's inputs and outputs -----------------------------------------------------


REGION, SIZE_KEY, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
WITH_REGION = f"'{REGION}' parameter for tensor 't'"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({REGION: 3, SIZE_KEY: 8}, f"invalid value type for '{REGION}' parameter for tensor 't', expected string_param."),
        ({REGION: "r"}, f"'{SIZE_KEY}' must be specified along with {WITH_REGION}"),
        ({SIZE_KEY: 8}, f"'{SIZE_KEY}' can not be specified without {WITH_REGION}"),
        ({OFFSET: 8}, f"'{OFFSET}' can not be specified without {WITH_REGION}"),
        ({REGION: "r", SIZE_KEY: "8"}, f"invalid value type for '{SIZE_KEY}' parameter for tensor 't', expected int64_param."),
        ({REGION: "r", SIZE_KEY: 8, OFFSET: True}, f"invalid value type for '{OFFSET}' parameter for tensor 't', expected int64_param."),
    ],
    ids=["region-type", "no-size", "size-alone", "offset-alone", "size-type", "offset-type"],
)
def test_shared_memory_parameters_are_checked_in_tritons_words(parameters: dict[str, object], message: str) -> None:
    assert refused(lambda: shared_memory_ref("t", parameters), ErrorCode.INVALID_ARG) == message  # type: ignore[arg-type]


def shm_request(input_offset: int = 0) -> InferRequest:
    placed = {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": input_offset}
    return InferRequest(
        "m",
        inputs=[InferInput("x", "FP32", (1, 4), parameters={**placed, "other": 1})],
        outputs=[RequestedOutput("y", {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 32})],
    )


def test_an_input_in_shared_memory_becomes_a_read_only_view_and_an_output_is_written_back(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    segment.buf[0:16] = np.arange(4, dtype=np.float32).tobytes()
    request = shm_request()
    outputs = attach_shared_memory(shm, request)
    item = request.inputs[0]
    assert isinstance(item.raw, memoryview) and item.raw.readonly
    assert np.frombuffer(item.raw, np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert item.parameters == {"other": 1} and request.outputs[0].parameters == {}
    assert outputs is not None
    response = InferResponse("m", "1", "", [InferOutput("y", "FP32", (1, 4), np.full((1, 4), 7.0, np.float32))])
    outputs.write(response)
    written = response.outputs[0]
    assert written.in_shared_memory and written.shape == (1, 4) and written.array.size == 0
    assert np.frombuffer(bytes(segment.buf[32:48]), np.float32).tolist() == [7.0] * 4


def test_a_text_output_is_written_in_its_wire_form(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    request = InferRequest("m", outputs=[RequestedOutput("s", {"shared_memory_region": "r", "shared_memory_byte_size": 64})])
    outputs = attach_shared_memory(shm, request)
    assert outputs is not None
    outputs.write(InferResponse("m", "1", "", [InferOutput("s", "BYTES", (2,), np.array(["ab", "cde"], dtype=object))]))
    assert bytes(segment.buf[0:13]) == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 3) + b"cde"


def test_an_output_region_smaller_than_the_output_fails_in_tritons_words(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    request = InferRequest("m", outputs=[RequestedOutput("y", {"shared_memory_region": "r", "shared_memory_byte_size": 8})])
    outputs = attach_shared_memory(shm, request)
    assert outputs is not None
    response = InferResponse("m", "1", "", [InferOutput("y", "FP32", (1, 4), np.zeros((1, 4), np.float32))])
    message = refused(lambda: outputs.write(response), ErrorCode.INTERNAL)
    assert message == (
        "shared memory size specified with the request for output 'y' (8 bytes) should be at least 16 bytes to hold the results"
    )


def test_an_input_with_data_and_a_region_is_refused(segment: shared_memory.SharedMemory) -> None:
    shm = registry()
    shm.register("r", key_of(segment), 0, 64)
    request = shm_request()
    request.inputs[0].raw = b"\0" * 16
    assert "unexpected 'content' provided when using shared memory" in refused(
        lambda: attach_shared_memory(shm, request), ErrorCode.INVALID_ARG
    )


def test_a_request_without_shared_memory_is_left_alone() -> None:
    request = InferRequest("m", inputs=[InferInput("x", "FP32", (1,), raw=b"\0" * 4, parameters={"p": 1})])
    assert attach_shared_memory(SharedMemoryRegistry(), request) is None
    assert request.inputs[0].parameters == {"p": 1}

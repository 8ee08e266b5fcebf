"""The floor: a bare grpc.aio server that answers perf_analyzer with canned responses.

It does no inference, validation or scheduling, so what it costs per request is what Python gRPC
itself costs (receive, parse, one handler call, serialize, send). ortserve's overhead is measured
against it. It serves `simple` and `mlp` with the metadata and config ortserve reports for the
bundled model_repo/, and does not advertise "statistics", so perf_analyzer skips ModelStatistics.

    python -m loadtest.floor_server --port 9101
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import uvloop

from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc
from server.proto import model_config_pb2

MAX_MESSAGE_BYTES = 2**31 - 1
log = logging.getLogger("floor_server")


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # wire name, e.g. "INT32"
    dims: tuple[int, ...]  # without the batch dim
    item_bytes: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    dynamic_batching: bool


# Mirrors what ortserve reports for model_repo/ (simple has a config.pbtxt; mlp is auto-completed).
MODELS = {
    "simple": ModelSpec(
        "simple",
        8,
        (Tensor("INPUT0", "INT32", (16,), 4), Tensor("INPUT1", "INT32", (16,), 4)),
        (Tensor("OUTPUT0", "INT32", (16,), 4), Tensor("OUTPUT1", "INT32", (16,), 4)),
        dynamic_batching=False,
    ),
    "mlp": ModelSpec("mlp", 4, (Tensor("input", "FP32", (256,), 4),), (Tensor("output", "FP32", (10,), 4),), dynamic_batching=True),
}


def model_metadata(spec: ModelSpec) -> pb.ModelMetadataResponse:
    def tensor(t: Tensor) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=[-1, *t.dims])

    return pb.ModelMetadataResponse(
        name=spec.name,
        versions=["1"],
        platform="onnxruntime_onnx",
        inputs=[tensor(t) for t in spec.inputs],
        outputs=[tensor(t) for t in spec.outputs],
    )


def model_config(spec: ModelSpec) -> pb.ModelConfigResponse:
    def data_type(t: Tensor) -> int:
        return model_config_pb2.DataType.Value(f"TYPE_{t.datatype}")

    config = model_config_pb2.ModelConfig(
        name=spec.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=spec.max_batch_size,
        input=[model_config_pb2.ModelInput(name=t.name, data_type=data_type(t), dims=t.dims) for t in spec.inputs],
        output=[model_config_pb2.ModelOutput(name=t.name, data_type=data_type(t), dims=t.dims) for t in spec.outputs],
        instance_group=[
            model_config_pb2.ModelInstanceGroup(name=f"{spec.name}_0", kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=1)
        ],
        default_model_filename="model.onnx",
    )
    if spec.dynamic_batching:
        config.dynamic_batching.preferred_batch_size.append(spec.max_batch_size)
    return pb.ModelConfigResponse(config=config)


def canned_response(spec: ModelSpec, batch: int) -> pb.ModelInferResponse:
    """Zero-filled outputs of the right names, shapes and byte sizes for ``batch`` rows."""
    response = pb.ModelInferResponse(model_name=spec.name, model_version="1")
    for t in spec.outputs:
        shape = [batch, *t.dims]
        response.outputs.add(name=t.name, datatype=t.datatype, shape=shape)
        count = batch
        for dim in t.dims:
            count *= dim
        response.raw_output_contents.append(bytes(count * t.item_bytes))
    return response


class FloorServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Only what perf_analyzer calls; every other RPC stays UNIMPLEMENTED (the base class)."""

    def __init__(self, models: dict[str, ModelSpec]) -> None:
        self._models = models
        self._metadata = {name: model_metadata(spec) for name, spec in models.items()}
        self._configs = {name: model_config(spec) for name, spec in models.items()}
        # Built on first use per (model, batch size) so `-b N` gets correctly sized outputs.
        self._canned: dict[tuple[str, int], pb.ModelInferResponse] = {}

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="floor", version="0", extensions=["model_configuration"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        if request.name not in self._metadata:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return self._metadata[request.name]

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        if request.name not in self._configs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return self._configs[request.name]

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        response = self._respond(request)
        if response is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.model_name}' is not found")
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # One answer per request as it arrives; errors travel in-stream, as Triton's do.
        async for request in request_iterator:
            response = self._respond(request)
            if response is None:
                yield pb.ModelStreamInferResponse(error_message=f"Request for unknown model: '{request.model_name}' is not found")
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)

    def _respond(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse | None:
        """The canned response for the request's batch size, with its ``id`` echoed (perf_analyzer's
        --async and --streaming match responses by id). None for an unknown model."""
        batch = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        key = (request.model_name, batch)
        canned = self._canned.get(key)
        if canned is None:
            spec = self._models.get(request.model_name)
            if spec is None:
                return None
            canned = self._canned[key] = canned_response(spec, batch)
        if not request.id:
            return canned
        response = pb.ModelInferResponse()
        response.CopyFrom(canned)
        response.id = request.id
        return response


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(MODELS), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("floor server listening on %s:%d (models: %s)", host, bound, ", ".join(MODELS))
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.floor_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

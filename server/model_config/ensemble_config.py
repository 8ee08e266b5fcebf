"""``platform: "ensemble"`` configs: Triton's rules for ``ensemble_scheduling`` and the plan the
ensemble scheduler runs.

Pure. ``validate_ensemble_config`` is what Triton's core checks of the config alone
(ValidateModelConfig, ValidateEnsembleSchedulingConfig); ``validate_ensemble_members`` what it
checks once the members' completed configs are known (ValidateEnsembleConfig). Messages are
Triton 2.41's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from server.errors import ServerError
from server.model_config.signature import format_dims
from server.proto import model_config_pb2 as mc

ENSEMBLE_PLATFORM = "ensemble"


@dataclass(frozen=True, slots=True)
class EnsembleStep:
    index: int
    model_name: str
    # -1: the member's latest READY version.
    model_version: int
    # (member input, ensemble tensor) and (member output, ensemble tensor), in config order.
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]

    @property
    def version_str(self) -> str:
        return "" if self.model_version < 0 else str(self.model_version)


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    steps: tuple[EnsembleStep, ...]
    # Steps that read each ensemble tensor.
    consumers: dict[str, tuple[int, ...]] = field(default_factory=dict)


def ensemble_plan(config: mc.ModelConfig) -> EnsemblePlan:
    steps = tuple(
        EnsembleStep(
            index,
            step.model_name,
            step.model_version,
            tuple(sorted(step.input_map.items())),
            tuple(sorted(step.output_map.items())),
        )
        for index, step in enumerate(config.ensemble_scheduling.step)
    )
    consumers: dict[str, list[int]] = {}
    for step in steps:
        for _, tensor in step.inputs:
            consumers.setdefault(tensor, []).append(step.index)
    return EnsemblePlan(steps, {tensor: tuple(sorted(set(indices))) for tensor, indices in consumers.items()})


def ensemble_members(config: mc.ModelConfig) -> dict[str, set[int]]:
    """Each member model's name and the versions its steps ask for (-1 = latest)."""
    members: dict[str, set[int]] = {}
    for step in config.ensemble_scheduling.step:
        if step.model_name:
            members.setdefault(step.model_name, set()).add(step.model_version)
    return members


def refuse_ensemble_scheduling(config: mc.ModelConfig) -> None:
    """Raise INVALID_ARG for ensemble_scheduling in a model that is not an ensemble."""
    if config.HasField("ensemble_scheduling"):
        raise ServerError.invalid_arg(
            f"ensemble scheduling cannot be set for model '{config.name}' whose platform is not {ENSEMBLE_PLATFORM}"
        )


def validate_ensemble_config(config: mc.ModelConfig) -> None:
    """Triton's checks of an ensemble's own config. Raises INVALID_ARG."""
    name = config.name
    if not config.HasField("ensemble_scheduling"):
        raise ServerError.invalid_arg(f"ensemble scheduling must be set for ensemble {name} whose platform is {ENSEMBLE_PLATFORM}")
    if config.max_batch_size < 0:
        raise ServerError.invalid_arg(f"'max_batch_size' must be non-negative value for {name}")
    if config.instance_group:
        raise ServerError.invalid_arg(f"instance group should not be specified for ensemble '{name}'")
    if config.HasField("optimization"):
        raise ServerError.invalid_arg(f"optimization should not be specified for ensemble '{name}'")
    if config.model_warmup:
        raise ServerError.invalid_arg(f"model_warmup can not be specified for ensemble '{name}'")
    if not config.ensemble_scheduling.step:
        raise ServerError.invalid_arg(f"must specify 'step' for ensemble '{name}'")
    _check_data_flow(config)


@dataclass(slots=True)
class _Node:
    """One ensemble tensor in the data-flow graph (Triton's EnsembleTensor)."""

    name: str
    is_output: bool = False
    ready: bool = False
    prev: list[_Node] = field(default_factory=list)
    next: list[_Node] = field(default_factory=list)


def _build_graph(config: mc.ModelConfig) -> dict[str, _Node]:
    """Triton's BuildEnsembleGraph: a node per ensemble tensor, linked from each step's inputs to
    its outputs."""
    nodes: dict[str, _Node] = {}
    name = config.name
    for index, step in enumerate(config.ensemble_scheduling.step):
        where = f"in step {index} of ensemble '{name}'"
        if not step.model_name:
            raise ServerError.invalid_arg(f"must specify 'model_name' {where}")
        if not step.input_map:
            raise ServerError.invalid_arg(f"must specify 'input_map' {where}")
        if not step.output_map:
            raise ServerError.invalid_arg(f"must specify 'output_map' {where}")
        produced = []
        for tensor in step.output_map.values():
            node = nodes.get(tensor)
            if node is not None and node.is_output:
                raise ServerError.invalid_arg(
                    f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{name}' step {index}"
                )
            node = nodes.setdefault(tensor, _Node(tensor))
            node.is_output = True
            produced.append(node)
        for tensor in step.input_map.values():
            source = nodes.setdefault(tensor, _Node(tensor))
            for output in produced:
                output.prev.append(source)
                source.next.append(output)
    return nodes


def _check_data_flow(config: mc.ModelConfig) -> None:
    """Triton's data-flow check: every input is used, every output is written (from the inputs,
    so a cycle leaves its outputs unwritten), no tensor is left unused."""
    nodes = _build_graph(config)
    name = config.name
    ready: deque[_Node] = deque()
    for entry in config.input:
        node = nodes.get(entry.name)
        if node is None:
            raise ServerError.invalid_arg(f"ensemble input '{entry.name}' for ensemble {name}' is not used")
        node.ready = True
        ready.append(node)
    while ready:
        for successor in ready.popleft().next:
            if not successor.ready and all(p.ready for p in successor.prev):
                successor.ready = True
                ready.append(successor)
    outputs = set()
    for output in config.output:
        node = nodes.get(output.name)
        if node is None:
            raise ServerError.invalid_arg(f"ensemble output '{output.name}' for ensemble {name}' is not used")
        if not node.ready:
            raise ServerError.invalid_arg(_not_written(node, name))
        outputs.add(output.name)
    for tensor, node in nodes.items():
        if tensor not in outputs and (not node.ready or not node.next):
            raise ServerError.invalid_arg(f"ensemble tensor '{tensor}' is unused in ensemble '{name}'")


def _not_written(node: _Node, ensemble: str) -> str:
    message = f"output '{node.name}' for ensemble '{ensemble}' is not written"
    last, seen = node, set()
    previous = node.prev
    while previous:
        step_back = next((p for p in previous if not p.ready and p.name not in seen), None)
        if step_back is None:
            break
        seen.add(step_back.name)
        last, previous = step_back, step_back.prev
    if last is not node:
        message += f": at least one of its depending tensors, '{last.name}', is not connected"
    return message


# ---- with the members' completed configs ----------------------------------------------------


@dataclass(slots=True)
class _Tensor:
    """An ensemble tensor's type and shape, and which model they were inferred from."""

    model: str
    datatype: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return (-1, *self.dims) if self.batching else self.dims


def validate_ensemble_members(config: mc.ModelConfig, members: dict[str, mc.ModelConfig]) -> None:
    """Triton's ValidateEnsembleConfig: batch sizes, every member input mapped exactly once, no
    mapping to or from a tensor the member lacks, types and shapes that agree. Raises INVALID_ARG."""
    name, batching = config.name, config.max_batch_size > 0
    tensors: dict[str, _Tensor] = {}
    for entry in config.input:
        tensors[entry.name] = _Tensor(name, entry.data_type, _io_dims(entry), batching)
    for output in config.output:
        tensors[output.name] = _Tensor(name, output.data_type, _io_dims(output), batching)
    for step in config.ensemble_scheduling.step:
        member = members[step.model_name]
        if member.max_batch_size != 0 and member.max_batch_size < config.max_batch_size:
            raise ServerError.invalid_arg(
                f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it contains model {step.model_name} "
                f"which only allows maximum batch size to be {member.max_batch_size}"
            )
        _check_inputs(name, step, member, tensors)
        _check_outputs(name, step, member, tensors)
    for step in config.ensemble_scheduling.step:
        if members[step.model_name].model_transaction_policy.decoupled:
            raise ServerError.invalid_arg(f"in ensemble {name}, model '{step.model_name}' is decoupled, which ortserve does not serve")


def _io_dims(entry: mc.ModelInput | mc.ModelOutput) -> tuple[int, ...]:
    return tuple(entry.reshape.shape) if entry.HasField("reshape") else tuple(entry.dims)


def _check_inputs(ensemble: str, step: mc.ModelEnsembling.Step, member: mc.ModelConfig, tensors: dict[str, _Tensor]) -> None:
    model = step.model_name
    names = {entry.name for entry in member.input}
    for member_input, tensor in step.input_map.items():
        if member_input not in names:
            raise ServerError.invalid_arg(
                f"in ensemble {ensemble}, ensemble tensor {tensor} is mapping to non-existing input {member_input} in model {model}"
            )
    for entry in member.input:
        mapped = [tensor for member_input, tensor in step.input_map.items() if member_input == entry.name]
        if not mapped:
            if entry.optional:
                continue
            raise ServerError.invalid_arg(
                f"in ensemble {ensemble}, input {entry.name} in model {model} is not mapped to any ensemble tensors"
            )
        _merge(ensemble, mapped[0], _Tensor(model, entry.data_type, tuple(entry.dims), member.max_batch_size > 0), tensors)


def _check_outputs(ensemble: str, step: mc.ModelEnsembling.Step, member: mc.ModelConfig, tensors: dict[str, _Tensor]) -> None:
    model = step.model_name
    outputs = {entry.name: entry for entry in member.output}
    for member_output, tensor in step.output_map.items():
        if member_output not in outputs:
            raise ServerError.invalid_arg(
                f"in ensemble {ensemble}, ensemble tensor {tensor} is mapped from non-existing output {member_output} in model {model}"
            )
        entry = outputs[member_output]
        _merge(ensemble, tensor, _Tensor(model, entry.data_type, tuple(entry.dims), member.max_batch_size > 0), tensors)


def _merge(ensemble: str, name: str, found: _Tensor, tensors: dict[str, _Tensor]) -> None:
    """Record what ``found`` says about tensor ``name``, or check it agrees with what is known."""
    known = tensors.setdefault(name, found)
    if known is found:
        return
    prefix = f"in ensemble {ensemble}, ensemble tensor {name}: "
    if known.datatype != found.datatype:
        raise ServerError.invalid_arg(
            prefix + f"inconsistent data type: {mc.DataType.Name(known.datatype)} is inferred from model {known.model} "
            f"while {mc.DataType.Name(found.datatype)} is inferred from model {found.model}"
        )
    if not dims_agree(known.dims, found.dims) and not dims_agree(known.full_dims, found.full_dims):
        raise ServerError.invalid_arg(
            prefix + f"inconsistent shape: {format_dims(known.full_dims)} is inferred from model {known.model} "
            f"while {format_dims(found.full_dims)} is inferred from model {found.model}"
        )


def dims_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Triton's CompareDimsWithWildcard: same rank, each dim equal or either one variable."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))

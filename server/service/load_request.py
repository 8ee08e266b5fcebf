"""What a RepositoryModelLoad request asks for, parsed once for both protocols.

Frontends check their wire's own value types (gRPC's string_param / bytes_param, HTTP's JSON
string / base64) and hand over plain values; the names, the config JSON and the rules about
combining them are checked here, in Triton's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import json_format

from server.errors import ServerError
from server.proto import model_config_pb2 as mc

FILE_PREFIX = "file:"


@dataclass(slots=True)
class LoadRequest:
    # The `config` parameter: replaces config.pbtxt (None: read the repository's).
    config: mc.ModelConfig | None = None
    # `file:<version>/<path>` → bytes, written to a private directory for this load.
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class LoadParameters:
    config_json: str | None
    files: dict[str, bytes]


def split_load_parameters(parameters: dict[str, str | bytes]) -> LoadParameters:
    """The config JSON and the files. Raises INVALID_ARG for a parameter of another name (in any
    control mode: the request is wrong whatever the server's mode)."""
    split = LoadParameters(None, {})
    for key, value in parameters.items():
        if key == "config" and isinstance(value, str):
            split.config_json = value
        elif key.startswith(FILE_PREFIX) and isinstance(value, bytes):
            split.files[key] = value
        else:
            raise ServerError.invalid_arg(f"unrecognized load parameter '{key}'.")
    return split


def parse_load_request(name: str, parameters: LoadParameters) -> LoadRequest:
    """Raises INVALID_ARG for a config that is not a model config, or files without a config
    (Triton requires one for a model file override)."""
    config_json, files = parameters.config_json, parameters.files
    # Triton refuses these while polling the repository; its words, then the reason.
    refused = f"failed to load '{name}', failed to poll from model repository: "
    if files and config_json is None:
        raise ServerError.invalid_arg(refused + "Load parameter 'config' must be specified for model file override")
    request = LoadRequest(files=files)
    if config_json is not None:
        request.config = mc.ModelConfig()
        try:
            json_format.Parse(config_json, request.config)
        except json_format.ParseError as exc:
            raise ServerError.invalid_arg(refused + f"Invalid config override: {exc}") from None
    return request

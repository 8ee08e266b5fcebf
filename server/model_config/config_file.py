"""Parse ``config.pbtxt`` (protobuf text format of Triton's ModelConfig) with precise errors."""

from __future__ import annotations

import logging
from pathlib import Path

from google.protobuf import text_format

from server.errors import ServerError
from server.proto import model_config_pb2 as mc

log = logging.getLogger(__name__)

# Top-level ModelConfig fields that ortserve acts on. Anything else set in a config parses (so real
# Triton configs load) and is named once in the log as ignored.
ACTED_ON_FIELDS: frozenset[str] = frozenset(
    {
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "instance_group",
        "default_model_filename",
        "parameters",
        "optimization",
        "dynamic_batching",
        "sequence_batching",
        "ensemble_scheduling",
        "model_warmup",
        "model_transaction_policy",
        "response_cache",
    }
)


def parse_config_text(text: str, source: str) -> mc.ModelConfig:
    """Parse text-format ModelConfig; a syntax error names ``source``, the line and the column."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        # protobuf prefixes the message with "line:column : "; we state both in words instead.
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1]
        raise ServerError.invalid_arg(f"failed to parse {source}: line {line} column {column}: {detail}") from None
    return config


def read_config_file(path: Path) -> mc.ModelConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError.invalid_arg(f"failed to read {path}: {exc}") from None
    return parse_config_text(text, str(path))


def ignored_fields(config: mc.ModelConfig) -> list[str]:
    """Names of set top-level fields that ortserve parses but does not act on."""
    return sorted(field.name for field, _ in config.ListFields() if field.name not in ACTED_ON_FIELDS)

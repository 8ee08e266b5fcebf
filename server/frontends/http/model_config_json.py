"""The completed ModelConfig as Triton's HTTP config endpoint renders it.

Protobuf's JSON mapping, with field names as in config.pbtxt and every primitive and repeated
field present (Triton prints defaults too), except that 64-bit integers are JSON numbers: the
mapping makes them strings, and Triton turns them back into numbers (``"dims": [16]``).
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def config_to_json(config: Message) -> dict[str, Any]:
    document = json_format.MessageToDict(config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _int64_as_numbers(cast(Descriptor, config.DESCRIPTOR), document)
    return document


def _int64_as_numbers(descriptor: Descriptor, document: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _map_values(field.message_type.fields_by_name["value"], value)
        elif field.message_type is not None:
            for item in value if isinstance(value, list) else [value]:
                _int64_as_numbers(field.message_type, item)
        elif field.type in _INT64_TYPES:
            document[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)


def _map_values(value_field: FieldDescriptor, mapping: dict[str, Any]) -> None:
    for key, value in mapping.items():
        if value_field.message_type is not None:
            _int64_as_numbers(value_field.message_type, value)
        elif value_field.type in _INT64_TYPES:
            mapping[key] = int(value)

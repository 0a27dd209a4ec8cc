"""Protobuf text format for Triton's ``config.pbtxt``: writing it from plain data, and checking it
against Triton's own ``ModelConfig`` schema.

Writing needs nothing beyond the standard library, so a CI box writes a repository without
Triton's client. Checking parses the text into ``tritonclient.grpc.model_config_pb2.ModelConfig``
(the schema Triton itself reads), so an unknown field, a wrong enum value or a wrong type is
caught here instead of when the server loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.errors import MissingDependencyError, UserError


@dataclass(frozen=True)
class Enum:
    """An enum value (``KIND_CPU``), written bare; a plain string is written quoted."""

    name: str


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """``{"name": "m", "dims": [3, 64], "input": [{...}]}`` as protobuf text format.

    A list of dicts is a repeated message, a list of scalars a repeated scalar field, a dict a
    message; a key mapping to a dict whose keys are not identifiers (``parameters``,
    ``cc_model_filenames``) is a protobuf map and written as repeated ``{ key: .. value: .. }``.
    """
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, dict) and key in _MAP_FIELDS:
            for map_key, map_value in value.items():
                entry = {"key": map_key, "value": map_value}
                lines.append(f"{pad}{key} {{\n{to_pbtxt(entry, indent + 1)}{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"{pad}{key} {{\n{to_pbtxt(item, indent + 1)}{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


# map<...> fields of ModelConfig and the messages inside it that this project writes
_MAP_FIELDS = frozenset({"parameters", "cc_model_filenames", "inputs"})


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'  # UTF-8 is allowed as is in a text-format string


def model_config_class() -> Any:
    """Triton's ``ModelConfig`` message class (from tritonclient, the ``triton`` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError("tritonclient", "triton", "Checking config.pbtxt against Triton's schema") from exc
    return model_config_pb2.ModelConfig


def parse_config(text: str, source: str = "config.pbtxt") -> Any:
    """``text`` parsed into Triton's ``ModelConfig``; a UserError naming the problem when the schema
    refuses it (unknown field, wrong enum value, wrong type)."""
    from google.protobuf import text_format

    config = model_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UserError(f"{source} is not a valid Triton model configuration: {exc}") from exc
    return config


def schema_available() -> bool:
    """Whether Triton's schema can be imported here (tritonclient installed)."""
    try:
        model_config_class()
    except MissingDependencyError:
        return False
    return True

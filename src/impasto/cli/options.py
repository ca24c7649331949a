"""Command-line options derived from a pydantic model (``RenderParams``).

Every field becomes a ``--flag`` with its type, choices, description and default, so a
new option in the engine appears on the command line without being re-typed.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

METAVARS = {int: "N", float: "X", str: "NAME", Path: "PATH"}


def add_model_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      model: type[BaseModel], *, skip: Sequence[str] = ()) -> list[str]:
    """Add one ``--flag`` per field of ``model`` and return the field names added.

    Flags default to SUPPRESS, so the namespace holds only what the user typed and the
    model's own defaults (and validation) apply to the rest; see ``given_options``.
    """
    names = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = unwrap_optional(field.annotation)
        default = field.get_default(call_default_factory=True)
        text = field.description or name
        if default is not None:
            text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                   "help": text.replace("%", "%%")}
        options.update(_argparse_kind(kind))
        if isinstance(field.json_schema_extra, dict) and "metavar" in field.json_schema_extra:
            options["metavar"] = field.json_schema_extra["metavar"]
        parser.add_argument("--" + name.replace("_", "-"), **options)
        names.append(name)
    return names


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The fields the user actually gave on the command line."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


def _argparse_kind(kind: Any) -> dict[str, Any]:
    """argparse's ``type``/``action``/``choices``/``metavar`` for one annotation."""
    origin = typing.get_origin(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        choices = list(typing.get_args(kind))
        return {"type": type(choices[0]), "choices": choices}
    if origin is list:
        (item,) = typing.get_args(kind)
        return {"type": comma_list(item), "metavar": f"{METAVARS[item]}[,{METAVARS[item]}...]"}
    if kind in METAVARS:
        return {"type": kind, "metavar": METAVARS[kind]}
    raise TypeError(f"no command-line form for {kind!r}")  # a new field type: extend here


def comma_list(item: type) -> Callable[[str], list]:
    def convert(text: str) -> list:
        return [item(part.strip()) for part in text.split(",")]

    convert.__name__ = f"comma-separated {item.__name__}"  # argparse names it in errors
    return convert

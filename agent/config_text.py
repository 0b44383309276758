"""How configuration errors read: a "did you mean" for a mistyped key and the
file:line:column of a YAML syntax error.

Shared by `agent.config` (the whole file) and `agent.sla.config` (an SLA section
alone); it imports neither, so both can import it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel

if TYPE_CHECKING:  # yaml_error's callers caught a YAML error: yaml is loaded then
    import yaml


def unwrap(annotation: Any) -> Any:
    """``X | None`` -> X; ``Annotated[X, ...]`` -> X (a union of several stays)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose fields are valid at ``loc`` (a pydantic error location below
    ``model``): a mapping's key and a list's index step into their value type."""
    annotation: Any = model
    for key in loc:
        annotation = unwrap(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(key))
            if info is None:
                return None
            annotation = info.annotation
        elif origin in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        elif origin in (list, tuple, Sequence) and isinstance(key, int):
            annotation = typing.get_args(annotation)[0]
        else:
            return None
    annotation = unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def did_you_mean(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """For an unknown key at ``loc`` (its last element), ``"did you mean
    'a.b.c'?"`` naming the closest field's full dotted path, or ``""``."""
    if not loc:
        return ""
    *parent, key = loc
    owner = model_at(model, parent)
    if owner is None:
        return ""
    close = difflib.get_close_matches(str(key), list(owner.model_fields), n=1, cutoff=0.6)
    if not close:
        return ""
    return "did you mean " + repr(".".join([*(str(p) for p in parent), close[0]])) + "?"


def yaml_error(err: yaml.YAMLError, source: str | Path, what: str = "") -> str:
    """``FILE:LINE:COLUMN: [what ]not valid YAML: problem`` (lines and columns from 1;
    ``what`` names the kind of file, e.g. ``"web config is"``)."""
    import yaml

    lead = f"{what} not valid YAML" if what else "not valid YAML"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        problem = ", ".join(p for p in (err.context, err.problem) if p) or "syntax error"
        return f"{where}: {lead}: {problem}"
    if isinstance(err, yaml.reader.ReaderError):
        return (f"{source}: {lead}: {err.reason} {chr(err.character)!r} "
                f"at character {err.position}")
    return f"{source}: {lead}: {err}"

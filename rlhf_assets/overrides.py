"""Per-asset overrides of a preset, and the one merge that applies them.

An asset's launchpad config may change a few of its preset's settings (a learning rate, a seed, a source). Each
such field is declared with `override(Spec, "path.in.spec")`: it takes its bounds and description from the preset
field it overrides, so the two cannot drift apart, and it records that path. `merged(spec, overrides)` is the only
code that applies overrides: every field that names a path and is set replaces the value at that path, and the
result is validated as a whole (so cross-field rules such as `chunk_size ≤ num_rollouts` hold for the merged
values). No Dagster import: step programs and scripts may use it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

import annotated_types
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

PRESET_PATH = "preset_path"
PRESET_SPEC = "preset_spec"
_BOUNDS = {annotated_types.Gt: "gt", annotated_types.Ge: "ge", annotated_types.Lt: "lt", annotated_types.Le: "le"}
SpecT = TypeVar("SpecT", bound=BaseModel)


def spec_field(spec: type[BaseModel], path: str) -> FieldInfo:
    """The field at a dotted `path` of a spec class (`config.target` of `PPOSpec`), or a KeyError naming it."""
    model: Any = spec
    info: FieldInfo | None = None
    for part in path.split("."):
        if info is not None:
            model = _model_of(info)
        if model is None or part not in model.model_fields:
            raise KeyError(f"{spec.__name__} has no field {path!r}")
        info = model.model_fields[part]
    assert info is not None
    return info


def _model_of(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def override(spec: type[BaseModel], path: str) -> Any:
    """A config field (default None: keep the preset's value) that overrides `spec`'s field at `path`, with that
    field's bounds and description, so the launchpad explains it in the preset's words."""
    info = spec_field(spec, path)
    bounds = {_BOUNDS[type(item)]: getattr(item, _BOUNDS[type(item)])
              for item in info.metadata if type(item) in _BOUNDS}
    description = f"Override the preset's `{spec.__name__}.{path}`: {info.description or ''}".rstrip(": ")
    return Field(default=None, description=description,
                 json_schema_extra={PRESET_PATH: path, PRESET_SPEC: spec.__name__}, **bounds)


def override_paths(overrides: type[BaseModel]) -> dict[str, str]:
    """Config field name → the preset path it overrides, for the fields declared with `override`."""
    return {name: info.json_schema_extra[PRESET_PATH] for name, info in overrides.model_fields.items()
            if isinstance(info.json_schema_extra, dict) and PRESET_PATH in info.json_schema_extra}


def merged(spec: SpecT, overrides: BaseModel) -> SpecT:
    """`spec` with every set override applied at its path, re-validated as a whole (bounds and cross-field rules)."""
    values = spec.model_dump()
    for name, path in override_paths(type(overrides)).items():
        value = getattr(overrides, name)
        if value is None:
            continue
        *parents, leaf = path.split(".")
        target = values
        for part in parents:
            target = target[part]
        target[leaf] = value.value if isinstance(value, Enum) else value
    return type(spec).model_validate(values)


def literal_enum(spec: type[BaseModel], path: str, name: str, doc: str) -> type[Enum]:
    """An Enum of a `Literal[...]` preset field's values: the launchpad shows an Enum as a dropdown."""
    choices = getattr(spec_field(spec, path).annotation, "__args__", ())
    enum = Enum(name, {choice: choice for choice in choices})  # type: ignore[misc]
    enum.__doc__ = doc
    return enum

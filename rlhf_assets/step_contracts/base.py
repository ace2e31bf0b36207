"""What a step request and a step report are, and how a report travels as flat metadata and comes back.

A step program and the asset that launches it agree on two typed models per step: the request (what the asset
sends: the preset's specs after overrides, and the step's own switches) and the report (what the step returns: the
numbers the checks and the comparison read, and what the UI shows). Neither side writes a config key or a metric
name as a string: the asset builds the request, the step validates it (`StepRuntime.request`), the step builds the
report, the asset validates what arrived against it, and readers get the report back from the manifest (`of`).

On the wire a report is the flat metadata Dagster shows and plots (`kl_to_sft`, `kl_to_sft_ci_low`, ...): a field
holding a group of figures is spelled out as `<field>_<member>`, and a group's `BARE` member takes the field's
own name (an estimate's point value, a plan's table). Integers land in the manifest's counts, floats in its
metrics; text and tables are shown in the UI and are not kept in the manifest, so a report read back from a
manifest has them empty.
"""

from __future__ import annotations

import types
from typing import Any, ClassVar, Protocol, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema


class IntervalLike(Protocol):
    """What the statistics code returns for an estimate (`eval.bootstrap.Interval`)."""

    estimate: float
    low: float
    high: float


class LengthControlledLike(Protocol):
    """What the length control returns (`eval.length.LengthControlled`)."""

    @property
    def controlled(self) -> IntervalLike: ...

    @property
    def length_difference(self) -> IntervalLike: ...

    @property
    def slope(self) -> float: ...


class Markdown(str):
    """Text the Dagster UI renders as markdown (tables, plots); sent through Pipes as `{raw_value, type: md}`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


class Figures(BaseModel):
    """A group of related figures in a report, spelled out as `<field>_<member>` on the wire."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    BARE: ClassVar[str | None] = None  # the member that takes the field's own name, if any


class Estimate(Figures):
    """A point estimate and its 95% interval: `<name>`, `<name>_ci_low`, `<name>_ci_high`."""

    BARE: ClassVar[str | None] = "estimate"
    estimate: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, interval: IntervalLike) -> Estimate:
        """From the statistics code's interval, as a report carries it."""
        return cls(estimate=interval.estimate, ci_low=interval.low, ci_high=interval.high)


class LengthControlledFigures(Figures):
    """A difference corrected for reply length (`eval/length.py`): `<name>_lc`, `<name>_length_difference` (each
    an estimate) and `<name>_length_slope`."""

    lc: Estimate
    length_difference: Estimate
    length_slope: float

    @classmethod
    def of(cls, result: LengthControlledLike) -> Self:
        """From the length control's result: what a reader needs to decide at equal length."""
        return cls(lc=Estimate.of(result.controlled), length_difference=Estimate.of(result.length_difference),
                   length_slope=result.slope)


class ControlledEstimate(Estimate):
    """A difference from SFT with its 95% interval (`<name>`), and the same at equal reply length (`<name>_lc`,
    `<name>_length_difference`, `<name>_length_slope`)."""

    lc: Estimate
    length_difference: Estimate
    length_slope: float

    @classmethod
    def of_result(cls, raw: IntervalLike, result: LengthControlledLike) -> ControlledEstimate:
        """The raw difference's interval and the length control's result, as one field of a report."""
        return cls(estimate=raw.estimate, ci_low=raw.low, ci_high=raw.high, lc=Estimate.of(result.controlled),
                   length_difference=Estimate.of(result.length_difference), length_slope=result.slope)


class ReportError(ValueError):
    """A step's metadata does not match its report model: the two sides of the contract disagree."""


class StepReport(Figures):
    """What a step returns; each step's report adds its fields. These two are added by the runtime itself."""

    step_startup_seconds: float | None = None
    peak_gpu_memory_gib: float | None = None

    def metadata(self) -> dict[str, Any]:
        """The report as flat Pipes metadata: numbers and text as they are, markdown as `{raw_value, type}`; the
        summary first, as a reader (and the UI's list) starts with it."""
        flat = _flatten(self, "")
        ordered = {key: flat[key] for key in ("summary", *flat) if key in flat}
        return {key: {"raw_value": str(value), "type": "md"} if isinstance(value, Markdown) else value
                for key, value in ordered.items()}

    @classmethod
    def wire_keys(cls) -> dict[str, type]:
        """Every flat key a report of this class may send, and its value's type (`int`, `float`, `str`, ...)."""
        return _keys(cls, "")

    def numbers(self) -> tuple[dict[str, int], dict[str, float]]:
        """The report's integers and floats, by their flat keys: what the manifest keeps as counts and metrics."""
        flat = _flatten(self, "")
        return ({k: v for k, v in flat.items() if type(v) is int},
                {k: v for k, v in flat.items() if type(v) is float})

    @classmethod
    def from_metadata(cls, values: dict[str, Any], source: str) -> Self:
        """The report from flat values (a step's metadata as Dagster received it), or a ReportError naming the
        keys the model does not declare or cannot read."""
        try:
            return cls.model_validate(_unflatten(cls, values, "", keep_text=True)[0])
        except (ValidationError, _UndeclaredError) as error:
            raise ReportError(f"{source} does not match {cls.__name__}: {error}") from None

    @classmethod
    def of(cls, manifest: Any) -> Self:
        """The report's numbers from a manifest's counts and metrics (its text and tables empty)."""
        values = {**manifest.counts, **manifest.metrics}
        try:
            return cls.model_validate(_unflatten(cls, values, "", keep_text=False)[0])
        except (ValidationError, _UndeclaredError) as error:
            raise ReportError(f"the manifest of {manifest.asset} does not match {cls.__name__} (materialize it "
                              f"again with this code): {error}") from None


class StepRequest(BaseModel):
    """What an asset sends its step program. Each request names its step (`steps/<STEP>.py`) and its report."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    STEP: ClassVar[str]
    REPORT: ClassVar[type[StepReport]]

    def wire(self) -> dict[str, Any]:
        """The request as JSON-ready values: what travels in the Pipes context and is kept in the manifest."""
        return self.model_dump(mode="json")

    @classmethod
    def of(cls, manifest: Any) -> Self:
        """The request a manifest's artifact was made from."""
        return cls.model_validate(manifest.config)


class _UndeclaredError(ValueError):
    pass


def _flatten(figures: Figures, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(figures).model_fields:
        value = getattr(figures, name)
        key = _key(type(figures), name, prefix)
        if value is None:
            continue
        if isinstance(value, Figures):
            out |= _flatten(value, f"{key}_")
        else:
            out[key] = value
    return out


def _keys(model: type[Figures], prefix: str) -> dict[str, type]:
    keys: dict[str, type] = {}
    for name, info in model.model_fields.items():
        key = _key(model, name, prefix)
        group = _group(info.annotation)
        keys |= _keys(group, f"{key}_") if group is not None else {key: _plain(info.annotation)}
    return keys


def _plain(annotation: Any) -> type:
    """The type of a plain field, without its `| None`."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next(o for o in options if o is not type(None))


def _key(model: type[Figures], name: str, prefix: str) -> str:
    return prefix.rstrip("_") if name == model.BARE and prefix else f"{prefix}{name}"


def _group(annotation: Any) -> type[Figures] | None:
    """The Figures class a field holds (also through `X | None`), or None for a plain value."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next((g for g in map(_group, get_args(annotation)) if g is not None), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, Figures) else None


def _text_kind(annotation: Any) -> type[str] | None:
    """`Markdown` or `str` for a text field (also through `X | None`), None for a number."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((o for o in options if isinstance(o, type) and issubclass(o, str)), None)


def _unflatten(model: type[Figures], values: dict[str, Any], prefix: str, *, keep_text: bool,
               top: bool = True) -> tuple[dict[str, Any] | None, set[str]]:
    """The nested values of `model` from flat `values` and the keys they took (None when a group found none of
    its keys); at the top, a key no field declares is an error."""
    nested: dict[str, Any] = {}
    used: set[str] = set()
    for name, info in model.model_fields.items():
        key = _key(model, name, prefix)
        group = _group(info.annotation)
        text = _text_kind(info.annotation)
        if group is not None:
            child, taken = _unflatten(group, values, f"{key}_", keep_text=keep_text, top=False)
            if child is not None:
                nested[name] = child
                used |= taken
        elif key in values:
            nested[name] = text(values[key]) if text is not None else values[key]
            used.add(key)
        elif text is not None and not keep_text:
            nested[name] = text("")
    if top:
        undeclared = sorted(set(values) - used)
        if undeclared:
            raise _UndeclaredError(f"undeclared keys {', '.join(undeclared)}")
    elif not used:
        return None, used
    return nested, used

"""Launchpad-friendly config: the preset chosen once per run, typed overrides merged by one rule, every field
described in the preset's own words."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from dagster import AssetKey, DagsterInvalidConfigError, Definitions, materialize
from dagster._config import ConfigTypeKind
from dagster.components.definitions import LazyDefinitions
from pydantic import BaseModel, Field, ValidationError

from rlhf_assets.data.hh import DataError
from rlhf_assets.definitions import defs
from rlhf_assets.overrides import PRESET_SPEC, merged, override, override_paths, spec_field
from rlhf_assets.ppo.config import PPOConfig, SamplingSettings
from rlhf_assets.presets import PROJECT_ROOT, TINY, PPOSpec, Preset
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, PresetResource
from rlhf_assets.specs import GenerationSpec
from tests.conftest import DEFINITIONS, all_assets, graph_resources

pytestmark = pytest.mark.unit


def _config_fields():
    for asset in all_assets:
        field = asset.op.config_field
        if field is None or not hasattr(field.config_type, "fields"):
            continue
        for name, config_field in field.config_type.fields.items():
            yield asset.key.to_user_string(), name, config_field


def _config_classes() -> dict[str, type[BaseModel]]:
    """Each asset's Config class, from the annotation of its `config` parameter."""
    classes = {}
    for asset in all_assets:
        hints = typing.get_type_hints(asset.op.compute_fn.decorated_fn)
        if "config" in hints:
            classes[asset.key.to_user_string()] = hints["config"]
    return classes


def test_every_config_field_has_a_description_and_a_default() -> None:
    missing = [(asset, name) for asset, name, field in _config_fields()
               if not (field.description or "").strip() or field.is_required]
    assert missing == []


def test_every_preset_and_ppo_field_is_described() -> None:
    seen: set[type[BaseModel]] = set()
    undescribed = []

    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            if not (info.description or "").strip():
                undescribed.append(f"{model.__name__}.{name}")
            for kind in (info.annotation, *typing.get_args(info.annotation)):
                if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                    seen.add(kind)
                    walk(kind)

    walk(Preset)
    assert PPOConfig in seen
    assert undescribed == []


def test_rollouts_and_evaluation_sample_with_one_declaration_of_each_setting() -> None:
    """PPO's rollouts and the evaluation draw responses with the same five settings, declared once: a bound or a
    description cannot drift between them, and PPO's evaluation starts from its rollouts' settings."""
    shared = set(SamplingSettings.model_fields)
    assert shared == {"max_new_tokens", "top_k", "top_p", "temperature", "stop_sequences"}
    for spec in (PPOConfig, GenerationSpec):
        assert issubclass(spec, SamplingSettings)
        assert all(repr(spec.model_fields[name]) == repr(SamplingSettings.model_fields[name]) for name in shared), spec
    rollouts = PPOConfig(top_p=0.9, temperature=0.7, max_new_tokens=64)
    evaluation = GenerationSpec(**rollouts.sampling(max_new_tokens=32).model_dump())
    assert (evaluation.top_p, evaluation.temperature, evaluation.max_new_tokens) == (0.9, 0.7, 32)


def test_the_preset_is_chosen_once_per_run_as_a_resource_not_per_asset() -> None:
    assert not [asset for asset, name, _ in _config_fields() if name == "preset"]
    users = {a.key.to_user_string() for a in all_assets if "preset" in a.required_resource_keys}
    assert {"hh_raw", "sft_model", "ppo_policy", "dpo_policy", "ppo_policy/toxicity_scores",
            "policy_comparison"} <= users
    assert isinstance(DEFINITIONS.resources["preset"], PresetResource)
    name = PresetResource.to_config_schema().as_field().config_type.fields["name"]
    choices = name.config_type.inner_type if name.config_type.kind == ConfigTypeKind.NONEABLE else name.config_type
    assert choices.kind == ConfigTypeKind.ENUM
    assert {value.config_value for value in choices.enum_values} == {"tiny", "small", "gptj_6b"}
    assert "tiny" in name.description and "gptj_6b" in name.description


def test_rlhf_preset_sets_the_code_location_default_and_a_typo_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster loads the code location by calling `defs`, which reads the environment then: no fresh interpreter
    is needed to see a changed setting."""
    monkeypatch.setenv("RLHF_PRESET", "small")
    assert defs().resources["preset"].name.value == "small"
    monkeypatch.setenv("RLHF_PRESET", "smal")
    with pytest.raises(Exception, match="unknown preset 'smal': choose one of gptj_6b, small, tiny"):
        defs()


def test_every_override_names_a_preset_field_and_keeps_its_bounds_and_words() -> None:
    checked = 0
    for asset, config_class in _config_classes().items():
        for name, path in override_paths(config_class).items():
            info = config_class.model_fields[name]
            preset_field = spec_field(_SPECS[info.json_schema_extra[PRESET_SPEC]], path)
            assert preset_field.description and preset_field.description in info.description, (asset, name)
            assert [type(m) for m in info.metadata] == [type(m) for m in preset_field.metadata], (asset, name)
            checked += 1
    assert checked >= 30


_SPECS = {type(section).__name__: type(section) for section in dict(TINY).values() if isinstance(section, BaseModel)}


class _Overrides(BaseModel):
    target: float | None = override(PPOSpec, "config.target")
    chunk_size: int | None = override(PPOSpec, "config.chunk_size")
    unrelated: bool = Field(default=False, description="not a preset field")


def test_the_one_merge_applies_paths_and_validates_the_merged_whole() -> None:
    spec = TINY.ppo
    assert merged(spec, _Overrides()) == spec
    moved = merged(spec, _Overrides(target=3.0, unrelated=True))
    assert moved.config.target == 3.0 and moved.config.total_steps == spec.config.total_steps
    with pytest.raises(ValidationError, match="chunk_size .* must not exceed num_rollouts"):
        merged(spec, _Overrides(chunk_size=spec.config.num_rollouts + 1))
    with pytest.raises(ValidationError, match="greater than 0"):
        _Overrides(target=0.0)
    with pytest.raises(KeyError, match="PPOSpec has no field 'config.targett'"):
        override(PPOSpec, "config.targett")


def test_resource_fields_are_described() -> None:
    for resource in (ArtifactStoreResource, LabelingResource, PresetResource):
        undescribed = [name for name, info in resource.model_fields.items() if not info.description]
        assert undescribed == [], resource.__name__


@pytest.mark.parametrize(("run_config", "named"), [
    ({"resources": {"preset": {"config": {"name": "huge"}}}}, "root:resources:preset:config:name"),
    ({"ops": {"eval_prompts": {"config": {"eval_prompt_count": "many"}}}},
     "root:ops:eval_prompts:config:eval_prompt_count"),
    ({"ops": {"eval_prompts": {"config": {"cuont": 3}}}}, 'unexpected config entry "cuont"'),
    ({"ops": {"eval_prompts": {"config": {"preset": "tiny"}}}}, 'unexpected config entry "preset"'),
])
def test_validation_errors_name_the_field_before_anything_runs(tmp_path, run_config: dict, named: str) -> None:
    with pytest.raises(DagsterInvalidConfigError, match=named.replace("(", r"\(")):
        materialize(all_assets, selection=[AssetKey("eval_prompts")], resources=graph_resources(tmp_path),
                    run_config=run_config)


def test_the_code_location_holds_one_definitions_object() -> None:
    """Dagster's CLI (`dagster asset materialize -m rlhf_assets.definitions`, the main job) refuses a module with
    more than one `Definitions` at module scope; the domains and the per-policy suites are merged by `defs`."""
    import rlhf_assets.definitions as module

    assert [name for name, value in vars(module).items()
            if isinstance(value, (Definitions, LazyDefinitions))] == ["defs"]


def test_importing_the_code_location_reads_no_setting_and_loading_it_names_a_bad_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are read when Dagster loads the code location, never on import: importing every module in a fresh
    interpreter with broken settings works, and loading names the bad one."""
    monkeypatch.setenv("RLHF_EVAL_CRON", "nightly please")
    monkeypatch.setenv("RLHF_PROMPT_SETS", "/nowhere/sets.yaml")
    modules = sorted("rlhf_assets." + ".".join(path.relative_to(PROJECT_ROOT / "rlhf_assets").with_suffix("").parts)
                     for path in (PROJECT_ROOT / "rlhf_assets" / "defs").rglob("*.py"))
    imported = subprocess.run([sys.executable, "-c", f"import rlhf_assets.definitions, {', '.join(modules)}"],
                              capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert imported.returncode == 0, imported.stderr[-2000:]
    with pytest.raises(DataError, match="/nowhere/sets.yaml"):
        defs()
    monkeypatch.delenv("RLHF_PROMPT_SETS")
    with pytest.raises(ValueError, match="RLHF_EVAL_CRON='nightly please' is not a valid cron expression"):
        defs()

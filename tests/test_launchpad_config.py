"""Launchpad-friendly config: every asset's config field is typed, described and defaulted; presets by name."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DagsterInvalidConfigError, materialize
from dagster._config import ConfigTypeKind

from rlhf_assets.definitions import all_assets
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource
from tests.conftest import graph_resources


def _config_fields():
    for asset in all_assets:
        field = asset.op.config_field
        if field is None:
            continue
        for name, config_field in field.config_type.fields.items():
            yield asset.key.to_user_string(), name, config_field


def test_every_config_field_has_a_description_and_a_default() -> None:
    missing = [(asset, name) for asset, name, field in _config_fields()
               if not (field.description or "").strip() or field.is_required]
    assert missing == []


def test_the_preset_is_a_dropdown_of_the_three_presets_on_every_asset() -> None:
    presets = {asset: field for asset, name, field in _config_fields() if name == "preset"}
    assert set(presets) == {asset.key.to_user_string() for asset in all_assets}
    for field in presets.values():
        config_type = field.config_type
        if config_type.kind == ConfigTypeKind.NONEABLE:
            config_type = config_type.inner_type
        assert config_type.kind == ConfigTypeKind.ENUM
        assert {value.config_value for value in config_type.enum_values} == {"tiny", "small", "gptj_6b"}


def test_resource_fields_are_described() -> None:
    for resource in (ArtifactStoreResource, LabelingResource):
        undescribed = [name for name, info in resource.model_fields.items() if not info.description]
        assert undescribed == [], resource.__name__


@pytest.mark.parametrize(("config", "named"), [
    ({"preset": "huge"}, "root:ops:eval_prompts:config:preset"),
    ({"count": "many"}, "root:ops:eval_prompts:config:count"),
    ({"cuont": 3}, 'unexpected config entry "cuont"'),
])
def test_validation_errors_name_the_field_before_anything_runs(tmp_path, config: dict, named: str) -> None:
    with pytest.raises(DagsterInvalidConfigError, match=named.replace("(", r"\(")):
        materialize(all_assets, selection=[AssetKey("eval_prompts")],
                    resources=graph_resources(tmp_path),
                    run_config={"ops": {"eval_prompts": {"config": config}}})

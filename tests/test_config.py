"""Strict configuration: a misspelt key is refused with its name and the source that set it (YAML file, ``RECSYS_*``
variable, keyword override), per-model parameters are typed, and ``conf/default.yaml`` states the models' defaults.
No JVM: settings are plain pydantic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys import constants as C
from recsys.config import DEFAULT_CONFIG, Settings, load_settings
from recsys.models.params import ALSParams, ModelParams, model_params
from recsys.strict import ConfigError


@pytest.fixture()
def config_file(tmp_path, monkeypatch):
    """Writes a YAML config and points ``RECSYS_CONFIG`` at it; returns its path."""
    def write(data: dict) -> Path:
        path = tmp_path / "conf.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("RECSYS_CONFIG", str(path))
        return path
    return write


def refusal(**overrides) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert "\n" not in message           # the CLI and the jobs print the first line only
    return message


def test_misspelt_top_level_key_in_yaml_is_refused(config_file):
    path = config_file({"warehose": "./wh"})
    assert refusal() == f"invalid config: warehose (from {path}): unknown key"


def test_misspelt_section_key_in_yaml_is_refused(config_file):
    path = config_file({"train": {"factor": 32}})
    assert refusal() == f"invalid config: train.factor (from {path}): unknown key"


def test_misspelt_nested_key_in_yaml_is_refused(config_file):
    path = config_file({"features": {"confidence": {"alpah": 1.0}}})
    assert refusal() == f"invalid config: features.confidence.alpah (from {path}): unknown key"


def test_misspelt_env_variable_is_refused(monkeypatch):
    monkeypatch.setenv("RECSYS_TRAIN__FACTOR", "32")
    assert refusal() == "invalid config: train.factor (from RECSYS_TRAIN__FACTOR): unknown key"


def test_env_variable_naming_no_section_is_refused(monkeypatch):
    monkeypatch.setenv("RECSYS_TRIAN__MODELS", '["popularity"]')
    assert refusal() == "invalid config: trian (from RECSYS_TRIAN__MODELS): unknown key"


def test_misspelt_key_in_a_json_env_section_names_the_variable(monkeypatch):
    monkeypatch.setenv("RECSYS_MONITOR", '{"ab": {"saltt": "x"}}')
    assert refusal() == "invalid config: monitor.ab.saltt (from RECSYS_MONITOR): unknown key"


def test_misspelt_keyword_override_is_refused():
    assert refusal(publish={"kk": 3}) == "invalid config: publish.kk (from arguments): unknown key"


def test_misspelt_model_parameter_is_refused_naming_model_and_key(config_file):
    path = config_file({"train": {"params": {"implicit_als": {"factor": 32}}}})
    assert refusal() == f"invalid config: train.params.implicit_als.factor (from {path}): unknown key"


def test_unknown_model_is_refused(config_file, monkeypatch):
    path = config_file({"train": {"params": {"spark_alss": {"factors": 8}}}})
    assert refusal() == f"invalid config: train.params.spark_alss (from {path}): unknown key"
    monkeypatch.setenv("RECSYS_TRAIN__MODELS", '["popularity", "bogus"]')
    assert "train.models (from RECSYS_TRAIN__MODELS): unknown model(s) bogus; choose from" in refusal()


def test_wrong_type_is_refused_naming_key_and_value(config_file, monkeypatch):
    path = config_file({"train": {"params": {"content": {"dims": "many"}}}})
    message = refusal()
    assert message.startswith(f"invalid config: train.params.content.dims (from {path}): ")
    assert "valid integer" in message and "got 'many'" in message
    monkeypatch.setenv("RECSYS_PUBLISH__K", "twenty")
    assert "publish.k (from RECSYS_PUBLISH__K): " in refusal()


def test_every_error_is_reported_on_one_line(config_file, monkeypatch):
    path = config_file({"spark": {"mastr": "local[1]"}})
    monkeypatch.setenv("RECSYS_SERVE__PROT", "80")
    assert refusal() == (f"invalid config: spark.mastr (from {path}): unknown key; "
                         f"serve.prot (from RECSYS_SERVE__PROT): unknown key")


def test_misspelt_key_in_the_quality_file_names_that_file(tmp_path, monkeypatch):
    quality = tmp_path / "quality.yaml"
    quality.write_text("sevrity: warn\n")
    monkeypatch.setenv("RECSYS_QUALITY_CONFIG", str(quality))
    assert refusal() == f"invalid config: quality.sevrity (from {quality}): unknown key"


def test_api_workers_refuse_a_misspelt_serve_key_and_leave_other_sections_alone(monkeypatch):
    from pydantic import ValidationError

    from recsys.serve.settings import ServeEnv

    monkeypatch.setenv("RECSYS_SPARK__MASTER", "local[1]")      # the jobs' key: not the workers' to judge
    monkeypatch.setenv("RECSYS_SERVE__CONNECTIONS", "4")
    assert ServeEnv().serve.connections == 4
    monkeypatch.setenv("RECSYS_SERVE__CONECTIONS", "4")
    with pytest.raises(ValidationError, match=r"serve\.conections\n  Extra inputs are not permitted"):
        ServeEnv()


def test_cli_reports_a_refused_key_in_one_line(monkeypatch, capsys):
    from recsys.cli import main

    monkeypatch.setenv("RECSYS_TRAIN__FACTOR", "32")
    assert main(["tables"]) == 2
    assert capsys.readouterr().err == ("recsys tables: error: invalid config: train.factor "
                                       "(from RECSYS_TRAIN__FACTOR): unknown key\n")


def test_correct_config_loads_with_overrides_from_every_source(config_file, monkeypatch, tmp_path):
    config_file({"train": {"models": ["popularity", "implicit_als"], "params": {"implicit_als": {"factors": 4}}}})
    monkeypatch.setenv("RECSYS_TRAIN__PARAMS__IMPLICIT_ALS__ITERATIONS", "3")
    monkeypatch.setenv("RECSYS_TEST_RACE_ROUNDS", "3")        # not a settings key: another part of the project's
    monkeypatch.setenv("RECSYS_DEBUG", "1")
    settings = load_settings(warehouse=tmp_path / "wh", synth={"categories": "Appliances, All_Beauty"})
    assert settings.train.models == ["popularity", "implicit_als"]
    assert settings.train.params.implicit_als == ALSParams(factors=4, iterations=3)
    assert settings.train.params.spark_als == ALSParams()
    assert settings.synth.categories == ["Appliances", "All_Beauty"]
    assert settings.warehouse == (tmp_path / "wh").resolve()


def test_model_parameters_outside_the_config_are_checked_the_same_way():
    assert model_params("content", {"dims": 8}).dims == 8
    with pytest.raises(ConfigError, match=r"^invalid config: spark_als\.factorz: unknown key$"):
        model_params("spark_als", {"factorz": 8})
    with pytest.raises(ConfigError, match=r"^invalid config: implicit_als\.iterations: .*got 'ten'$"):
        ModelParams().updated({"implicit_als": {"iterations": "ten"}})


def test_model_parameters_cover_every_model():
    from recsys.loading import MODELS

    assert tuple(ModelParams.model_fields) == C.MODELS
    assert tuple(MODELS) == C.MODELS
    # every model but the session models, which join the configured run once measured on the demo data
    assert load_settings().train.models == [m for m in C.MODELS if m not in C.SESSION_MODELS]


def test_default_yaml_states_the_models_defaults():
    """Where ``conf/default.yaml`` states a value, it is the model's default: the file documents the defaults
    and changing either alone is a mistake (the YAML wins at run time, the default everywhere else)."""
    stated = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for name, value in stated.items():
        field = Settings.model_fields[name]
        if isinstance(value, dict):
            section = field.annotation
            assert section.model_validate(value) == section(), name
        else:
            assert field.annotation(value) == field.default, name

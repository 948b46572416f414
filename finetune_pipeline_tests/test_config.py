"""The typed run config: wrong values refused as they load, one line per problem; check-config; schema and docs.

Each wrong config in the table gives exactly one line, naming the file, the
field's path, what it allows and the type it got, never the value. The
committed JSON Schema and docs/configuration.md are compared with what the
models generate, so they cannot go stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import (
    ConfigError,
    PipelineConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from finetune_pipeline.lib.config.loading import ConfigLoader
from finetune_pipeline.lib.config.reference import COMMAND, REFERENCE_FILE, reference_text
from finetune_pipeline.lib.config.schema import SCHEMA_FILE, schema_text
from finetune_pipeline.lib.section import Section
from finetune_pipeline.lib.training.spec import TrainSpec

SECRET = f"sk-live-{uuid.uuid4().hex}"

# (id, the file's text, the one line expected after "<file>: ")
WRONG = [
    ("batch_size as a string", 'train:\n  batch_size: "8"\n',
     "train.batch_size must be an integer > 0 (got a string)"),
    ("epochs as a word", "train:\n  epochs: three\n", "train.epochs must be a number > 0 (got a string)"),
    ("epochs negative", "train:\n  epochs: -1\n", "train.epochs must be > 0 (got an integer <= 0)"),
    ("a bool is not a number", "train:\n  batch_size: true\n",
     "train.batch_size must be an integer > 0 (got a boolean)"),
    ("a float is not an integer", "eval:\n  limit: 2.5\n", "eval.limit must be an integer >= 0 (got a float)"),
    ("out of a range", "train:\n  general_mix_ratio: 1.5\n",
     "train.general_mix_ratio must be in [0, 1) (got a float >= 1)"),
    ("not a choice", "train:\n  method: dora\n", "train.method must be lora, qlora or full (got another string)"),
    ("true, false or auto", "train:\n  packing: sometimes\n",
     "train.packing must be true, false or auto (got another string)"),
    ("auto or a number", "openai:\n  n_epochs: 0\n", "openai.n_epochs must be auto or an integer > 0 "
                                                     "(got an integer <= 0)"),
    ("a list item", "train:\n  lora:\n    target_modules: [q_proj, 7]\n",
     "train.lora.target_modules must be a list of strings or a string (got a list holding an integer)"),
    ("a mapping's value", "costs:\n  hourly_usd:\n    h100: cheap\n",
     "costs.hourly_usd.h100 must be a number >= 0 (got a string)"),
    ("a section that is not a mapping", "train: 5\n", "train must be a mapping (got an integer)"),
    ("unknown format", "data:\n  mapping:\n    format: excel\n",
     "data.mapping.format must be a registered row format: seed, chat or table (got another string)"),
    ("test_file policy without the file", "data:\n  split:\n    policy: test_file\n",
     "data.split.test_file is required with data.split.policy: test_file (it names the raw file that is the "
     "test split)"),
    ("save_steps not a multiple", "train:\n  eval_steps: 4\n  save_steps: 6\n",
     "train.save_steps (6) must be a positive multiple of train.eval_steps (4) or 0 (every eval), so the best "
     "evaluated step has a checkpoint"),
    ("full with nf4", "train:\n  method: full\n  quantization: nf4\n",
     "train.quantization: nf4 trains adapters on a 4-bit base; it cannot go with train.method: full"),
    ("time zone", "schedule:\n  timezone: Mars/Base\n",
     "schedule.timezone 'Mars/Base' is not an IANA time zone (e.g. UTC, Europe/Berlin)"),
    ("cron", "schedule:\n  cron: every night\n",
     "schedule.cron must have 5 fields (minute hour day month weekday); it has 2"),
    ("metric", "promotion:\n  primary_metric: f1\n", "promotion.primary_metric must be a metric the eval reports"),
    ("a pasted API key", f"eval:\n  openai:\n    api_key_env: {SECRET}\n",
     "eval.openai.api_key_env must be the name of an environment variable (letters, digits and _), not the key "
     "itself"),
    ("an unknown key holding a secret", f"train:\n  api_token: {SECRET}\n",
     "train has unknown field(s) ['api_token']; known: attn_implementation, batch_size, early_stopping_patience, epochs,"),
    ("a misspelt section", "trian:\n  epochs: 2\n",
     "the config has unknown field(s) ['trian']; known: artifacts_mirror,"),
    ("base_dir is not the file's to say", "base_dir: /elsewhere\n", "base_dir is not a config field"),
]


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [c[1:] for c in WRONG], ids=[c[0] for c in WRONG])
def test_a_wrong_value_is_one_line_naming_file_field_and_rule(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    [line] = e.value.lines
    assert line.startswith(f"{path}: {expected}"), line
    assert str(e.value) == line
    assert SECRET not in line  # values are never echoed: the type is named instead


def test_a_misspelt_key_gets_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "trian:\n  epochs: 2\n"))
    assert e.value.lines[0].endswith("(did you mean 'train' for 'trian'?)")


def test_yaml_12_floats_are_floats_and_pyyaml_itself_is_untouched(tmp_path):
    cfg = load_config(_write(tmp_path, "train:\n  learning_rate: 2e-5\n  warmup_ratio: 5E-2\n"
                                       "openai:\n  max_wait_s: 1.5e+3\n"))
    assert cfg.train.learning_rate == 2e-05 and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.warmup_ratio == 0.05 and cfg.openai.max_wait_s == 1500.0
    assert yaml.load("[1e-4, -3e2, 1.5, 7, .inf, 1e-4x]", Loader=ConfigLoader)[:5] == [1e-4, -300.0, 1.5, 7,
                                                                                        float("inf")]
    # The resolver is the config loader's own: yaml.safe_load still reads YAML 1.1.
    assert yaml.safe_load("x: 2e-5") == {"x": "2e-5"}


def test_an_integer_is_fine_where_a_float_is_expected_and_kubernetes_quantities_may_be_numbers(tmp_path):
    cfg = load_config(_write(tmp_path, "train:\n  epochs: 2\n  pod:\n    cpu: 8\n"))
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.pod.cpu == "8"


def test_every_problem_of_a_file_is_its_own_line(tmp_path):
    path = _write(tmp_path, 'train:\n  epochs: three\n  batch_size: "8"\n  lora:\n    rank: 8\n'
                            "schedule:\n  timezone: Mars/Base\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(e.value.lines) == 4 and all(line.startswith(f"{path}: ") for line in e.value.lines)
    assert str(e.value) == "\n".join(e.value.lines)
    assert {line.split(": ", 1)[1].split(" ", 1)[0] for line in e.value.lines} == {
        "train.epochs", "train.batch_size", "train.lora", "schedule.timezone"}


@pytest.mark.parametrize("text, expected", [
    ("train:\n  epochs: 1\n   batch_size: 3\n", ":3:14: not valid YAML: mapping values are not allowed here"),
    ("train:\n  epochs: 1\ntrain:\n  batch_size: 3\n", ":3:1: not valid YAML: key 'train' is written twice"),
    ("- data\n- train\n", ": the config must be a mapping of sections and settings (data:, train:, ...); got a list"),
], ids=["syntax error", "duplicate key", "not a mapping"])
def test_a_file_that_is_not_a_config_mapping_is_one_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    [line] = e.value.lines
    assert line.startswith(f"{path}{expected}"), line


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert e.value.lines == [f"{tmp_path / 'nope.yaml'}: config file not found"]


def test_empty_file_and_empty_sections_take_the_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")).train == TrainConfig()
    cfg = load_config(_write(tmp_path, "eval:\n# every field commented out\ntrain:\n  epochs: 2\n"))
    assert cfg.eval.batch_size == 16 and cfg.train.epochs == 2.0


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"epochs": "x"}}, PROJECT_ROOT)
    assert e.value.lines == ["<config>: train.epochs must be a number > 0 (got a string)"]


def test_sections_are_typed_and_assignments_are_checked(tmp_path):
    cfg = load_config(PROJECT_ROOT / "configs" / "demo.yaml")
    assert isinstance(cfg.train, TrainConfig) and cfg.train.lora.r == 16
    # section(): the same values as plain JSON data, for recipes and lineage.
    train = cfg.section("train")
    assert train["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    assert json.loads(json.dumps(train)) == train
    with pytest.raises(ValidationError):
        cfg.train.batch_size = "8"
    assert cfg.train.model_copy(update={"quantization": "nf4"}).effective_method == "qlora"
    assert cfg.train.effective_method == "lora"


def test_the_training_spec_round_trips_as_json_with_a_typed_train_section(tmp_path):
    cfg = load_config(PROJECT_ROOT / "configs" / "demo.yaml")
    spec = TrainSpec(base_model_dir="/m", train_file="/d/train.jsonl", val_file="/d/val.jsonl", output_dir="/o",
                     work_dir="/w", train=cfg.train)
    path = tmp_path / "spec.json"
    path.write_text(spec.dump())
    assert TrainSpec.load(path) == spec == TrainSpec.load(spec.dump())  # a file, or the JSON inline
    assert isinstance(TrainSpec.load(path).train, TrainConfig)
    with pytest.raises(ValidationError):
        TrainSpec.load(spec.dump().replace('"epochs":1.0', '"epochs":"one"'))


# --- finetune-pipeline check-config ------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    """The installed `finetune-pipeline` command, as a user runs it, from the project folder."""
    command = Path(sys.executable).with_name("finetune-pipeline")
    return subprocess.run([str(command), *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_check_config_summarises_a_valid_file():
    proc = _cli("check-config", "configs/demo.yaml")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == ("configs/demo.yaml: valid: base model embedded:smollm2-135m-instruct, LoRA r=16, "
                           "1 epoch(s), raw data ../data/raw (format seed), artifacts ../data/artifacts\n")


def test_check_config_prints_each_problem_on_its_own_line_and_exits_2(tmp_path):
    path = _write(tmp_path, f'train:\n  epochs: three\n  batch_size: "8"\ndata:\n  token: {SECRET}\n')
    proc = _cli("check-config", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    prefix = f"finetune-pipeline check-config: error: {path}: "
    lines = proc.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(prefix) for line in lines)
    assert {line.removeprefix(prefix).split(";")[0] for line in lines} == {
        "train.epochs must be a number > 0 (got a string)", "train.batch_size must be an integer > 0 (got a string)",
        "data has unknown field(s) ['token']"}
    assert SECRET not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_loads_no_torch_transformers_dagster_datasets_or_peft():
    code = ("import json, sys\n"
            "from finetune_pipeline.cli.main import main\n"
            "rc = main(['check-config', 'configs/banking77.yaml'])\n"
            "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["rc"] == 0 and "finetune_pipeline.lib.config.pipeline" in result["modules"]  # it did check
    heavy = {m.split(".")[0] for m in result["modules"]} & {"torch", "transformers", "dagster", "datasets", "peft"}
    assert heavy == set()


def test_check_config_schema_is_the_committed_schema():
    proc = _cli("check-config", "--schema")
    assert proc.returncode == 0 and proc.stdout == schema_text()
    schema = json.loads(proc.stdout)
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["epochs"] == {"default": 1.0, "description": train["epochs"]["description"],
                               "exclusiveMinimum": 0, "type": "number"}
    assert "base_dir" not in schema["properties"]  # internal: set by the loader, not written in files


# --- generated files are up to date ----------------------------------------------------------

def test_committed_json_schema_is_up_to_date():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "configs/pipeline.schema.json is out of date: finetune-pipeline check-config --schema > "
        "configs/pipeline.schema.json")


def test_committed_configuration_reference_is_up_to_date():
    assert REFERENCE_FILE.read_text() == reference_text(), f"docs/configuration.md is out of date: {COMMAND}"


def test_the_reference_lists_every_field_of_every_section():
    text = reference_text()

    def walk(model, path):
        for name, field in model.model_fields.items():
            if name == "base_dir":
                continue
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, Section):
                assert f"## `{path}{name}`" in text
                walk(kind, f"{path}{name}.")
            else:
                section = text.split(f"## `{path[:-1]}`\n" if path else "## Top level\n", 1)[1]
                assert f"| `{name}` |" in section.split("\n## ", 1)[0], f"{path}{name}"
    walk(PipelineConfig, "")


def test_shipped_configs_point_editors_at_the_schema_and_validate_against_it():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    for name in ("demo.yaml", "banking77.yaml"):
        path = PROJECT_ROOT / "configs" / name
        assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=pipeline.schema.json"
        jsonschema.validate(yaml.load(path.read_text(), Loader=ConfigLoader), schema)
        load_config(path)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"train": {"batch_size": "8"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"train": {"rank": 8}}, schema)

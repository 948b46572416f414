"""The README's three extension examples, run from the README itself: each is one file plus one registration.

Each example's code block is executed as its module would be, its object is
registered the way the README says (one entry in the registry), and the test
checks it takes effect where a user would see it; before the registration the
same use is refused, so the registry (not a hard-coded list elsewhere) decides.
"""

from __future__ import annotations

import re

import pytest

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import ConfigError, config_from_dict
from finetune_pipeline.lib.data import formats
from finetune_pipeline.lib.data.cleaning import clean
from finetune_pipeline.lib.data.raw_files import RawDataError, read_raw_folder
from finetune_pipeline.lib.evaluation import metrics
from finetune_pipeline.lib.evaluation.backends import OpenAICompatibleBackend
from finetune_pipeline.lib.stages import backend_for
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.registry import Registry


def _examples() -> dict[str, str]:
    """The python blocks of the README's "Developing" section, by the file each one is (the first path named
    in the bold paragraph above it)."""
    developing = (PROJECT_ROOT / "README.md").read_text().split("## Developing", 1)[1]
    examples = {}
    for part in developing.split("\n**")[1:]:
        path = re.search(r"`(lib/[\w/]+\.py)`", part).group(1)
        examples[path] = part.split("```python\n", 1)[1].split("```", 1)[0]
    return examples


def _run(path: str) -> dict:
    code = _examples()[path]
    namespace: dict = {"__name__": path.removesuffix(".py").replace("/", ".")}
    exec(compile(code, f"README.md: {path}", "exec"), namespace)
    return namespace


def test_the_readme_shows_the_three_examples():
    assert sorted(_examples()) == ["lib/data/formats/qa.py", "lib/evaluation/metrics/short_answer.py",
                                   "lib/versions/kinds/served.py"]
    for code in _examples().values():  # "a ten-line example": the class is short
        assert len([line for line in code.splitlines() if line.strip()]) <= 16


def test_a_row_format_is_a_file_and_a_registration(tmp_path, monkeypatch):
    values = {"data": {"raw_dir": "raw", "mapping": {"format": "qa"}, "require_json_output": False}}
    with pytest.raises(ConfigError, match="data.mapping.format"):
        config_from_dict(values, tmp_path)  # not registered yet: refused at load
    fmt = _run("lib/data/formats/qa.py")["FORMAT"]
    monkeypatch.setitem(formats.FORMATS, fmt.name, fmt)
    cfg = config_from_dict(values, tmp_path)

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "faq.csv").write_text("question,answer\nHow do I reset my password?,Use the link on the login page.\n"
                                 "What are your hours?,\n")
    rows = read_raw_folder(raw, cfg.data.mapping)
    result = clean(rows, cfg.data, lambda messages: 10, files=["faq.csv"])
    [kept] = result.records
    assert [m["role"] for m in kept.messages] == ["user", "assistant"]
    assert kept.messages[1]["content"] == "Use the link on the login page."
    [rejected] = result.rejected  # an empty answer is quarantined with the rule it breaks, never dropped
    assert (rejected.row, rejected.reason) == (2, "empty_content")

    (raw / "faq.csv").write_text("question,reply\nHow do I reset my password?,Use the link.\n")
    with pytest.raises(RawDataError, match=r"faq.csv: column mapping \(format 'qa'\) names \['answer'\]"):
        read_raw_folder(raw, cfg.data.mapping)


def test_a_metric_is_a_file_and_a_registration(tmp_path, monkeypatch):
    promotion = {"promotion": {"primary_metric": "short_answer"}}
    with pytest.raises(ConfigError, match="promotion.primary_metric"):
        config_from_dict(promotion, tmp_path)
    monkeypatch.setattr(metrics, "METRICS", [*metrics.METRICS, _run("lib/evaluation/metrics/short_answer.py")
                                             ["ShortAnswer"]()])
    assert config_from_dict(promotion, tmp_path).promotion.primary_metric == "short_answer"

    answers = metrics.Answers(predictions=['{"category": "billing"}', "x" * 201],
                              expected=['{"category": "billing"}', '{"category": "billing"}'], fields=["category"])
    assert metrics.scores(answers)["short_answer"] == 0.5
    assert [row["short_answer"] for row in metrics.row_scores(answers)] == [True, False]


def test_a_version_kind_is_a_file_and_a_registration(tmp_path, monkeypatch):
    registry, store = Registry(tmp_path), ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register("llama-served", "served", remote_id="meta-llama/Llama-3.1-8B-Instruct")
    kind = _run("lib/versions/kinds/served.py")["KIND"]
    monkeypatch.setitem(kinds.KINDS, kind.name, kind)
    with pytest.raises(ValueError, match="a served version needs its model name"):
        registry.register("llama-served", "served")
    version = registry.register("llama-served", "served", remote_id="meta-llama/Llama-3.1-8B-Instruct")

    cfg = config_from_dict({"eval": {"openai": {"base_url": "http://127.0.0.1:8000/v1"}}}, tmp_path)
    backend = backend_for(cfg, version)  # remote kinds go to the endpoint by their remote id
    assert isinstance(backend, OpenAICompatibleBackend)
    assert backend.identity() == {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1",
                                  "model": "meta-llama/Llama-3.1-8B-Instruct"}
    assert kind.training_cost(version, store, cfg.costs).cost_usd == 0.0
    assert kind.serving_spec(version, store, cfg.serving).model == "meta-llama/Llama-3.1-8B-Instruct"

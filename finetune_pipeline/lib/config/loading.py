"""Reading a config file: YAML with YAML 1.2 floats, then PipelineConfig, every problem as one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config.errors import ConfigError, kind_of, validation_lines
from finetune_pipeline.lib.config.pipeline import PipelineConfig

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"

FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2's float: PyYAML's YAML 1.1 resolver wants a dot, so `learning_rate: 2e-5` would be the
# string "2e-5". This one also takes 2e-5, 1e-4, 1.5e+3 (and still .inf / .nan).
_FLOAT = re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
  | [-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
  | [-+]?\.(?:inf|Inf|INF)
  | \.(?:nan|NaN|NAN)
)$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats, refusing a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the mapping's own keys, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                # Otherwise the last one silently wins, and the first is what the reader sees.
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is written twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# A copy of SafeLoader's resolvers (add_implicit_resolver would append to lists SafeLoader shares),
# with the float resolver replaced.
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "-+0123456789.":
    ConfigLoader.yaml_implicit_resolvers.setdefault(_first, []).append((FLOAT_TAG, _FLOAT))


def read_yaml(path: Path, where: str) -> Any:
    """The file's YAML data; a missing file or a syntax error is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{where}: config file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read the config file ({type(e).__name__})") from None
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        # The problem only, not PyYAML's snippet of the line: it may hold a secret.
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{where}{at}: not valid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({type(e).__name__})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML config; `overrides` is a nested dict merged on top. Relative paths resolve to its folder."""
    given = Path(path).expanduser() if path else DEFAULT_CONFIG
    where = str(given)
    values = read_yaml(given, where)
    if values is None:  # an empty file: every default
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: the config must be a mapping of sections and settings "
                          f"(data:, train:, ...); got {kind_of(values)}")
    if "base_dir" in values:
        # Where the file is says where its paths start; the file does not say it about itself.
        raise ConfigError(f"{where}: base_dir is not a config field (relative paths resolve against the "
                          "config file's folder)")
    values = _merge(values, overrides or {})
    values["base_dir"] = str(given.resolve().parent)
    return _validate(values, where)


def config_from_dict(values: dict[str, Any], base_dir: str | Path) -> PipelineConfig:
    """A config from already-parsed values (e.g. Dagster run config); relative paths resolve to base_dir."""
    values = dict(values)
    values.setdefault("base_dir", str(base_dir))
    return _validate(values, "<config>")


def _validate(values: dict[str, Any], where: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(values)
    except ValidationError as e:
        raise ConfigError(*validation_lines(e, where, values)) from None


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

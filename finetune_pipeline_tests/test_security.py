"""Security: safetensors only, remote code only by allow-list, no path escapes, secrets stay out, UI on loopback."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.lib import PROJECT_ROOT, stages
from finetune_pipeline.lib.config import ConfigError, load_config
from finetune_pipeline.lib.data.raw_files import RawDataError, read_raw_file
from finetune_pipeline.lib.models.base_models import (
    BaseModel,
    ModelLoadError,
    load_model,
    resolve_base_model,
)
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.storage.secrets import SecretLeakError
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline.lib.versions.version import VersionKeyError, base_key
from finetune_pipeline_tests.audit import OpenedFiles
from finetune_pipeline_tests.helpers import (
    MODEL_CACHE,
    materialized,
    seed_row,
    write_config,
    write_jsonl,
)

VENV_BIN = PROJECT_ROOT / ".venv" / "bin"


class Booby:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(folder: Path, marker: Path, name: str = "pytorch_model.bin") -> Path:
    path = folder / name
    path.write_bytes(pickle.dumps({"model.embed_tokens.weight": Booby(marker)}))
    return path


# --- weights: safetensors only -------------------------------------------------------------------------------


def test_model_loads_from_safetensors_and_never_opens_a_pickle_beside_it(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "pickle-ran"
    planted = plant_pickle(folder, marker)
    with OpenedFiles() as opened:
        model = resolve_base_model(str(folder), MODEL_CACHE)
        load_model(model.path)
    assert str(planted) not in opened and not marker.exists()
    assert str(folder / "model.safetensors") in opened


def test_pickle_only_checkpoint_is_refused_with_a_clear_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    marker = tmp_path / "pickle-ran"
    planted = plant_pickle(folder, marker)
    expected = rf"{folder}: only pickle checkpoints \(pytorch_model\.bin\); refusing to load them because unpickling"
    with OpenedFiles() as opened:
        with pytest.raises(ModelLoadError, match=expected):
            resolve_base_model(str(folder), MODEL_CACHE)
        with pytest.raises(ModelLoadError, match=expected):
            load_model(folder)
    assert str(planted) not in opened and not marker.exists()


def test_hub_downloads_fetch_no_pickle_files(tiny_model_dir, monkeypatch):
    """The hub is out of reach here: the download is replaced, its file filter is what is checked."""
    import huggingface_hub

    seen = {}

    def snapshot_download(model_id, allow_patterns):
        seen["patterns"] = allow_patterns
        return str(tiny_model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_base_model("some-org/some-model", MODEL_CACHE).source["kind"] == "hub"
    fetched = lambda name: any(fnmatch.fnmatch(name, p) for p in seen["patterns"])  # noqa: E731
    assert all(fetched(n) for n in ("model.safetensors", "model-00001-of-00002.safetensors", "config.json",
                                     "tokenizer.json", "chat_template.jinja"))
    assert not any(fetched(n) for n in ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "x.pkl",
                                         "modeling_custom.py"))


def test_every_model_load_in_the_code_asks_for_safetensors():
    """Source check, so a new loader cannot slip in: weights load through `from_pretrained(..., use_safetensors=True)`.

    Exempt: tokenizers and configs (no weights), GGUF conversion (`gguf_file=`, a tensor format
    without code), and PeftModel adapters (our own safetensors artifacts; PEFT's fallback is
    torch.load(weights_only=True), which refuses code).
    """
    offenders = []
    for path in sorted((PROJECT_ROOT / "finetune_pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = ast.unparse(node.func.value)
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "from_pretrained":
                if re.search(r"Tokenizer|Config|Processor", receiver) or "gguf_file" in keywords \
                        or receiver == "PeftModel":
                    continue
                safe = keywords.get("use_safetensors")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {ast.unparse(node)}")
            elif node.func.attr == "load" and receiver in ("torch", "pickle"):
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


# --- remote code: allow-list only --------------------------------------------------------------------------


def remote_code_model(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    """A model folder whose config asks for its own Python; importing that Python creates `marker`."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-arch", auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                                                    "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('remote code ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil-arch'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    return folder


def test_remote_code_never_runs_by_default(tiny_model_dir, tmp_path):
    marker = tmp_path / "remote-code-ran"
    folder = remote_code_model(tiny_model_dir, tmp_path / "model", marker)
    with pytest.raises(Exception, match="trust_remote_code"):
        load_model(folder)
    assert not marker.exists()
    # The flag is the only gate: with it (an allow-listed model), the model's own code runs.
    try:
        load_model(folder, trust_remote_code=True)
    except Exception:
        pass  # whether the toy class loads does not matter; that its code ran does
    assert marker.read_text() == "remote code ran"


@pytest.mark.parametrize("allow, expected", [([], False), (["some-org/other-model"], False), (["tiny-random"], True)])
def test_training_gets_trust_remote_code_only_when_the_allow_list_names_the_model(allow, expected, tmp_path):
    raw = write_jsonl(tmp_path / "raw" / "r.jsonl", [seed_row(f"My parcel number {i} is late again") for i in range(6)])
    cfg = load_config(write_config(tmp_path, raw.parent, model={"base_model": "tiny-random",
                                                                 "trust_remote_code_allow": allow}))
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    specs = []

    def launch(spec_path: Path) -> dict:
        specs.append(json.loads(spec_path.read_text()))
        raise RuntimeError("stop before training")

    with pytest.raises(RuntimeError, match="stop before training"):
        stages.lora_adapter(cfg, base, dataset, launch=launch)
    assert specs[0]["trust_remote_code"] is expected
    # Nothing under a final name (a hidden work folder for checkpoints may stay, for resuming).
    assert [p for p in (cfg.artifacts_dir / "lora_adapter").iterdir() if not p.name.startswith(".")] == []


def test_no_code_turns_remote_code_on_by_itself():
    hits = [f"{p.relative_to(PROJECT_ROOT)}:{i}" for p in (PROJECT_ROOT / "finetune_pipeline").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"trust_remote_code\s*=\s*True", line)]
    assert hits == []


# --- paths: nothing escapes the artifacts root or the raw folder ---------------------------------------------


BAD_KEYS = ["../evil", "../../etc/passwd", "/etc/passwd", "a/b", "..", ".hidden", "x\\..\\y", "a\nb", ""]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_version_keys_cannot_escape_the_registry(key, tmp_path):
    registry = Registry(tmp_path / "root")
    with pytest.raises(VersionKeyError, match="invalid model version key"):
        registry.register(key, "base", weights="/models/x")
    with pytest.raises(VersionKeyError):
        registry.get(key)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("asset, key", [("thing", "../x"), ("thing", "../../x"), ("thing", "/etc"),
                                        ("thing", "a/../../x"), ("..", "x"), ("../x", "k"), ("/tmp", "k"),
                                        ("thing", ""), ("", "")])
def test_artifact_paths_cannot_escape_the_root(asset, key, tmp_path):
    with pytest.raises(ValueError, match="escapes the artifacts root"):
        ArtifactStore(tmp_path / "root").dir(asset, key)


def test_a_symlink_inside_the_artifacts_root_cannot_lead_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "thing").symlink_to(outside, target_is_directory=True)
    store = ArtifactStore(root)
    with pytest.raises(ValueError, match="escapes the artifacts root"):
        with store.write("thing", "k1", inputs=[], config={}, code_version="1") as out:
            (out.dir / "x").write_text("x")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("spec", ["../../etc", "/abs/path/../../x", "embedded:../../x", "org/name/../../..",
                                  "a b/c?d*e", "evil/..", "./.."])
def test_model_names_from_config_become_safe_version_keys(spec, tmp_path):
    key = base_key(BaseModel(spec, tmp_path, "h", {}).slug)
    assert "/" not in key and ".." not in key
    assert Registry(tmp_path).dir / f"{key}.json" == (Registry(tmp_path).dir / f"{key}.json").resolve()


def test_a_raw_file_read_directly_still_cannot_leave_its_folder(tmp_path):
    from finetune_pipeline.lib.config import ColumnMapping

    raw, outside = tmp_path / "raw", tmp_path / "outside.jsonl"
    raw.mkdir()
    write_jsonl(outside, [seed_row("Not yours to read at all")])
    (raw / "link.jsonl").symlink_to(outside)
    with OpenedFiles() as opened, pytest.raises(RawDataError, match=r"link\.jsonl: resolves to .* outside the raw"):
        read_raw_file(raw / "link.jsonl", raw, ColumnMapping())
    assert str(outside) not in opened


# --- secrets -------------------------------------------------------------------------------------------------


SECRET_VARS = ["OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DAGSTER_PG_PASSWORD"]


@pytest.mark.slow
def test_secrets_in_the_environment_never_reach_lineage_metadata_or_logs(tmp_path, monkeypatch, capfd):
    """A real Dagster run with secrets in its environment: scan every byte it leaves behind."""
    canary = f"sk-canary-{uuid.uuid4().hex}"
    for i, name in enumerate(SECRET_VARS):
        monkeypatch.setenv(name, f"{canary}-{i}")
    # Positive control: a string that *should* be recorded (a raw file name goes into metadata,
    # logs and lineage), so the scan is shown to see into the instance's SQLite and the artifacts.
    control = f"visible-control-{uuid.uuid4().hex}"
    raw = write_jsonl(tmp_path / "raw" / f"{control}.jsonl",
                      [seed_row(f"Order {i} never arrived, please help") for i in range(8)])
    config = write_config(tmp_path, raw.parent)
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config))
    from finetune_pipeline.definitions import defs

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = defs.resolve_job_def("train_and_merge").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(k) for k in ("raw_examples", "base_model",
                                                                          "training_dataset")])
        assert materialized(result) == ["base_model", "raw_examples", "training_dataset"]
    out, err = capfd.readouterr()
    places = {"stdout/stderr": (out + err).encode()}
    for folder in (home, load_config(config).artifacts_dir):
        for p in folder.rglob("*"):
            if p.is_file():
                places[str(p)] = p.read_bytes()
    assert [where for where, data in places.items() if canary.encode() in data] == []
    seen = [where for where, data in places.items() if control.encode() in data]
    assert any(w.endswith("lineage.json") for w in seen) and any(".db" in w for w in seen)
    assert b"training_dataset: kept 8 of 8 rows" in places["stdout/stderr"]  # the run's log was captured


def test_a_secret_value_in_lineage_is_refused_naming_only_the_variable(tmp_path, monkeypatch):
    canary = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("MY_SERVICE_TOKEN", canary)
    store = ArtifactStore(tmp_path)
    with pytest.raises(SecretLeakError, match=r"lineage of thing/k1 would contain the value of \$MY_SERVICE_TOKEN") as e:
        with store.write("thing", "k1", inputs=[], config={"endpoint": f"https://user:{canary}@example.com"},
                         code_version="1") as out:
            (out.dir / "x.txt").write_text("x")
    assert canary not in str(e.value)
    assert store.find("thing", "k1") is None and list((tmp_path / "thing").iterdir()) == []


def test_a_secret_written_into_the_config_file_is_refused_without_echoing_it(tmp_path):
    canary = f"sk-live-{uuid.uuid4().hex}"
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  api_key: {canary}\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['api_key'\]") as e:
        load_config(path)
    assert canary not in str(e.value)


def test_resources_take_secrets_only_from_environment_variables():
    """No resource holds a literal secret: such fields are unset (read from the environment) or an EnvVar."""
    from finetune_pipeline.definitions import defs

    secretish = re.compile(r"key|token|secret|password|credential", re.I)
    checked = []
    for name, resource in defs.resources.items():
        for field in getattr(type(resource), "model_fields", {}):
            if secretish.search(field):
                value = getattr(resource, field)
                assert value is None or isinstance(value, dg.EnvVar), f"{name}.{field} is a literal"
                checked.append(f"{name}.{field}")
    assert checked or not any("openai" in n for n in defs.resources)


# --- the web UI listens on loopback --------------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port`, from the kernel's own socket tables."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]) if width == 8
                             else address)
    return found


@pytest.mark.slow
def test_web_ui_listens_on_loopback_by_default(tmp_path):
    # `dagster dev` passes --host to the webserver only when given one; the webserver's default is what counts.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.Popen([str(VENV_BIN / "dagster-webserver"), "--empty-workspace", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (addresses := _listening(port)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert addresses == ["127.0.0.1"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    help_text = subprocess.run([str(VENV_BIN / "dagster-webserver"), "--help"], capture_output=True, text=True).stdout
    assert re.search(r"-h, --host TEXT\s+Host to run server on\s+\[default: 127\.0\.0\.1\]", help_text)
    dev_help = subprocess.run([str(VENV_BIN / "dagster"), "dev", "--help"], capture_output=True, text=True).stdout
    assert "dagster-webserver running on\n  localhost" in dev_help


def test_documented_ui_commands_do_not_open_the_ui_to_the_network():
    files = [PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "scripts").glob("*"), PROJECT_ROOT / ".ci" / "run"]
    commands = [(f.name, line) for f in files if f.is_file() for line in f.read_text().splitlines()
                if re.search(r"dagster(-webserver| dev)\b", line)]
    assert any("dagster dev" in line for _, line in commands)  # the README documents the UI command
    for name, line in commands:
        host = re.search(r"(?:\s-h|--host|--dagit-host)[\s=]+(\S+)", line)
        assert host is None or host.group(1) in ("127.0.0.1", "localhost", "::1"), f"{name}: {line}"

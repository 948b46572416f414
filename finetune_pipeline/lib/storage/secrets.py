"""Refuse to write a secret's value into lineage or metadata, naming the variable, never the value."""

from __future__ import annotations

import json
import os
import re
from typing import Any

# Environment variables that hold secrets, by name: *PASSWORD*, *SECRET*, *_KEY, *_TOKEN, *_CREDENTIALS...
SECRET_ENV_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|(^|_)(API_?KEY|KEY|TOKEN|CREDENTIALS?)($|_)")


class SecretLeakError(ValueError):
    """An artifact's lineage would contain a secret's value; it is not written."""


def secret_env_values() -> dict[str, str]:
    """name -> value of the secret-looking environment variables (values shorter than 8 are not secrets).

    Variables that name where a secret is (HF_TOKEN_PATH, *_FILE, *_DIR) hold paths, not secrets.
    """
    return {k: v for k, v in os.environ.items()
            if SECRET_ENV_NAME.search(k.upper()) and not re.search(r"_(PATH|FILE|DIR)$", k.upper()) and len(v) >= 8}


def refuse_secrets(what: str, value: Any) -> None:
    """Raise if the JSON of `value` contains the value of a secret environment variable (naming the variable only)."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    for name, secret in secret_env_values().items():
        if secret in text or json.dumps(secret)[1:-1] in text:
            raise SecretLeakError(f"{what} would contain the value of ${name}; refusing to write it "
                                  "(secrets stay in the environment, never in config, lineage or metadata)")

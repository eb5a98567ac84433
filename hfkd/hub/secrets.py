"""Keep credentials out of everything hfkd writes (lineage, config.json, model cards)."""
from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"
# Keys whose values are credentials whatever they hold (hub_token, api_key, HF_TOKEN, password, ...).
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api[_-]?key|credential|authorization)", re.IGNORECASE)
# Hugging Face user/org access tokens, wherever they appear in a string.
_HF_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


def _known_tokens():
    tokens = {os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    try:  # the token a push would use (env, token file, ...), without ever showing it
        from huggingface_hub import get_token

        tokens.add(get_token())
    except Exception:  # noqa: BLE001 - no token configured, or an old huggingface_hub
        pass
    return [t for t in tokens if t and len(t) >= 8]


def _scrub_string(value: str, tokens) -> str:
    for t in tokens:
        if t in value:
            value = value.replace(t, REDACTED)
    return _HF_TOKEN_VALUE.sub(REDACTED, value)


def redact_secrets(obj: Any, _tokens=None) -> Any:
    """A copy of ``obj`` with credential-like keys dropped and token values masked.

    Applied to every piece of metadata before it is written: a training run's
    arguments may carry ``hub_token`` or similar, and nothing written next to a
    model (which is meant to be published) may hold one.
    """
    tokens = _known_tokens() if _tokens is None else _tokens
    if isinstance(obj, dict):
        return {k: redact_secrets(v, tokens) for k, v in obj.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_secrets(v, tokens) for v in obj)
    if isinstance(obj, str):
        return _scrub_string(obj, tokens)
    return obj

"""Signed payloads for the Executor's trampoline: function names and cloudpickle.

A task run by :func:`rushpy.trampoline.run` names the code it runs, so its
inputs are code, not data: whoever can push tasks could otherwise run any
importable function (``os:system``) or, with pickles, anything at all. Every
payload is therefore signed with an HMAC-SHA256 under the shared key of
:mod:`rushpy.signing` (``RUSHPY_SIGNING_KEY``/``RUSHPY_SIGNING_KEY_FILE``; a
controller without one signs with its process key, which it hands to its own
local workers in their environment), and the worker refuses what does not
verify. A function name is also accepted unsigned when its module is allowed
(``RUSHPY_ALLOW_MODULES``). Pickles additionally need the worker's opt-in
(``--allow-pickle`` or ``RUSHPY_ALLOW_PICKLE=1``); results of pickled calls
come back pickled and signed the same way, since the controller unpickles them.

cloudpickle is an optional dependency (the ``pickle`` extra), imported only
when a pickle is made or read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Literal

from rushpy.errors import ConfigError, UntrustedCodeError
from rushpy.signing import ENV_SIGNING_KEY, ENV_SIGNING_KEY_FILE, SigningKey

__all__ = [
    "ENV_ALLOW_PICKLE",
    "Purpose",
    "dumps",
    "loads",
    "mac",
    "pickle_allowed",
    "verify",
]

ENV_ALLOW_PICKLE = "RUSHPY_ALLOW_PICKLE"
"""Environment variable (``1``) by which a worker's operator accepts signed pickled callables."""

Purpose = Literal["function", "call", "result"]
"""What a payload is: a function name, a pickled call, or pickled results (never interchangeable)."""

_DOMAIN = b"rushpy payload v1\x00"


def pickle_allowed() -> bool:
    """Whether this process's operator accepts pickled callables (``RUSHPY_ALLOW_PICKLE``)."""
    return os.environ.get(ENV_ALLOW_PICKLE, "").strip().lower() in {"1", "true", "yes", "on"}


def mac(key: SigningKey, data: bytes, purpose: Purpose) -> str:
    """The HMAC-SHA256 (hex) of ``data`` for ``purpose`` under ``key``."""
    return hmac.new(key.secret, _DOMAIN + purpose.encode() + b"\x00" + data, hashlib.sha256).hexdigest()


def verify(key: SigningKey | None, data: bytes, signature: object, purpose: Purpose) -> bool:
    """Whether ``signature`` is :func:`mac` of ``data`` under ``key`` (``False`` without a key)."""
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(signature, mac(key, data, purpose))


def _cloudpickle() -> Any:
    try:
        import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415 - optional dependency, needed only for pickles
    except ImportError:
        raise ConfigError("pickled callables need cloudpickle: pip install 'rushpy[pickle]'") from None
    return cloudpickle


def dumps(value: Any, key: SigningKey, purpose: Purpose) -> tuple[bytes, str]:
    """``value`` pickled with cloudpickle, and its signature.

    Raises:
        ConfigError: cloudpickle is not installed.
        TypeError: ``value`` cannot be pickled (cloudpickle's own error).

    """
    data: bytes = _cloudpickle().dumps(value)
    return data, mac(key, data, purpose)


def loads(data: object, signature: object, key: SigningKey | None, purpose: Purpose) -> Any:
    """Unpickle ``data`` after checking its signature: nothing is unpickled that does not verify.

    Raises:
        UntrustedCodeError: no key is configured, or the signature does not
            match (written by someone without the key, or changed).
        ConfigError: cloudpickle is not installed.

    """
    if key is None:
        raise UntrustedCodeError(
            f"refusing a pickled {purpose}: no signing key to verify it; give both sides the same "
            f"secret in {ENV_SIGNING_KEY} (or a file named by {ENV_SIGNING_KEY_FILE})"
        )
    if not isinstance(data, bytes) or not verify(key, data, signature, purpose):
        raise UntrustedCodeError(
            f"refusing a pickled {purpose}: its signature does not verify with key {key.key_id} "
            "(written by someone without the key, or changed); nothing was unpickled"
        )
    return _cloudpickle().loads(data)

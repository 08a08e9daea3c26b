"""Which stored start arguments a process may run: signatures and module allow-lists.

Anyone who can write a network's keys can rewrite its start arguments (the
function that workers started without ``--fun`` import and call). A worker
therefore runs stored start arguments only if its operator allowed them, in
one of three ways:

- the function was named on the worker's own command line (``--fun``: the
  stored arguments are then not used for the function at all);
- the arguments carry a valid signature: an HMAC-SHA256 over the whole
  start-arguments mapping, the network id and the key prefix, with a secret
  the worker holds (``RUSHPY_SIGNING_KEY``, or a file named by
  ``RUSHPY_SIGNING_KEY_FILE``; never a command-line flag, which every user of
  the host can read in the process list);
- every function the arguments name lives in a module under a prefix of the
  worker's allow-list (``--allow-module PREFIX`` or ``RUSHPY_ALLOW_MODULES``).

Without a key and an allow-list, stored start arguments are refused: the safe
default, with an error that says what to set.

The controller signs what it stores with the configured key; without one it
signs with a random key private to its process, so that the same process (a
second ``start_local_workers()`` without ``fun``) can verify it, while other
processes refuse those arguments unless they allow the module. Binding the
network id and the prefix into the MAC stops signed arguments being copied
into another network. The signature covers every field, so fields added later
(a worker loop and its arguments) are covered without a change here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]

from rushpy.errors import ConfigError, UntrustedCodeError
from rushpy.keys import DEFAULT_PREFIX

__all__ = [
    "ENV_ALLOW_MODULES",
    "ENV_SIGNING_KEY",
    "ENV_SIGNING_KEY_FILE",
    "FUNCTION_FIELDS",
    "MIN_KEY_BYTES",
    "SIGNATURE_FIELD",
    "SigningKey",
    "StartArgsPolicy",
    "configured_key",
    "parse_allow_modules",
    "sign_start_args",
    "signing_key",
]

ENV_SIGNING_KEY = "RUSHPY_SIGNING_KEY"
"""Environment variable holding the shared secret that signs start arguments."""
ENV_SIGNING_KEY_FILE = "RUSHPY_SIGNING_KEY_FILE"
"""Environment variable naming a file that holds the shared secret (instead of ``RUSHPY_SIGNING_KEY``)."""
ENV_ALLOW_MODULES = "RUSHPY_ALLOW_MODULES"
"""Environment variable: comma-separated module prefixes whose functions stored start arguments may name."""
SIGNATURE_FIELD = "signature"
"""Field of the stored start arguments that holds the signature (every other field is signed)."""
FUNCTION_FIELDS = ("fun", "worker_loop")
"""Fields of start arguments that name code to import and run."""
MIN_KEY_BYTES = 16
"""Shortest accepted signing key, in bytes."""

_ALGORITHM = "hmac-sha256"
_DOMAIN = b"rushpy start args v1\x00"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KEY_HINT = "e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))'"

Where = Literal["worker", "controller"]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A secret that signs and verifies start arguments.

    Attributes:
        secret: The key bytes (never shown in ``repr``).
        shared: ``True`` for a configured key (environment or file), ``False``
            for the random key private to this process.

    """

    secret: bytes = field(repr=False)
    shared: bool = True

    @property
    def key_id(self) -> str:
        """A short public name of the key (a MAC of a constant): tells keys apart in messages."""
        return hmac.new(self.secret, b"rushpy key id", hashlib.sha256).hexdigest()[:16]


# Text (hex), so the pool can hand it to this process's own local workers in their
# environment (RUSHPY_SIGNING_KEY), as the Executor's signed payloads need.
_PROCESS_KEY = SigningKey(secrets.token_hex(32).encode(), shared=False)


def configured_key() -> SigningKey | None:
    """The key configured in the environment (``RUSHPY_SIGNING_KEY`` or ``RUSHPY_SIGNING_KEY_FILE``).

    Read at every call, so a key set after import counts. A file's trailing
    line break is ignored.

    Raises:
        ConfigError: both variables are set, the file cannot be read, or the
            key is shorter than :data:`MIN_KEY_BYTES`.

    """
    text = os.environ.get(ENV_SIGNING_KEY)
    path = os.environ.get(ENV_SIGNING_KEY_FILE)
    if text and path:
        raise ConfigError(f"both {ENV_SIGNING_KEY} and {ENV_SIGNING_KEY_FILE} are set: set only one of them")
    if path:
        try:
            secret = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the signing key file {ENV_SIGNING_KEY_FILE}={path!r}: {exc.strerror}; "
                "point it at a readable file holding the shared secret"
            ) from None
        source = f"the file {path!r} ({ENV_SIGNING_KEY_FILE})"
    elif text:
        secret = text.encode()
        source = ENV_SIGNING_KEY
    else:
        return None
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the signing key in {source} has {len(secret)} bytes: use at least {MIN_KEY_BYTES} "
            f"random bytes, {_KEY_HINT}"
        )
    return SigningKey(secret)


def signing_key() -> SigningKey:
    """The key a controller signs with: the configured one, else this process's random key.

    Raises:
        ConfigError: the configured key is invalid (see :func:`configured_key`).

    """
    return configured_key() or _PROCESS_KEY


def parse_allow_modules(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Check module prefixes (``mypkg`` or ``mypkg.objectives``) and return them.

    Raises:
        ConfigError: a prefix is not a dotted Python module name.

    """
    checked = []
    for prefix in prefixes:
        name = prefix.strip()
        if not _MODULE.fullmatch(name):
            raise ConfigError(
                f"invalid allowed module prefix {prefix!r}: use a dotted module name such as "
                "'mypkg' or 'mypkg.objectives' (it allows that module and the modules below it)"
            )
        checked.append(name)
    return tuple(dict.fromkeys(checked))


def _canonical(value: Any, where: str = "start arguments") -> Any:
    """``value`` with every mapping's keys sorted (msgpack keeps insertion order)."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where} has a key that is not a string: cannot sign it")
        return {k: _canonical(value[k], f"{where}.{k}") for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, where) for v in value]
    return value


def _mac(key: SigningKey, args: Mapping[str, Any], network_id: str, prefix: str) -> str:
    body = {k: v for k, v in args.items() if k != SIGNATURE_FIELD}
    try:
        packed = msgpack.packb(_canonical(body), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"start arguments hold a value that cannot be signed: {exc}") from None
    # Network id and prefix are identifiers (no NUL), so the separators are unambiguous.
    message = _DOMAIN + prefix.encode() + b"\x00" + network_id.encode() + b"\x00" + packed
    return hmac.new(key.secret, message, hashlib.sha256).hexdigest()


def sign_start_args(
    args: Mapping[str, Any],
    network_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    key: SigningKey | None = None,
) -> dict[str, Any]:
    """``args`` with a :data:`SIGNATURE_FIELD` over every other field, the network and the prefix.

    Args:
        args: The start arguments (string keys, msgpack values).
        network_id: The network they are stored for.
        prefix: The network's key prefix.
        key: The key to sign with (default :func:`signing_key`).

    Raises:
        ConfigError: the key is invalid, or a value cannot be encoded.

    """
    key = signing_key() if key is None else key
    signature = {
        "alg": _ALGORITHM,
        "key_id": key.key_id,
        "shared": key.shared,
        "mac": _mac(key, args, network_id, prefix),
    }
    return {**{k: v for k, v in args.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: signature}


@dataclass(frozen=True, slots=True)
class StartArgsPolicy:
    """What stored start arguments a process accepts.

    Attributes:
        key: Key that verifies signatures (``None``: signatures cannot be checked).
        allow_modules: Module prefixes whose functions are accepted unsigned.

    """

    key: SigningKey | None = None
    allow_modules: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, allow_modules: Sequence[str] = (), *, process_key: bool = False) -> StartArgsPolicy:
        """The policy of this process: the configured key and ``allow_modules`` plus ``RUSHPY_ALLOW_MODULES``.

        Args:
            allow_modules: Prefixes given by the operator (``--allow-module``).
            process_key: Without a configured key, verify with this process's
                own random key (a controller checking what it stored itself).

        Raises:
            ConfigError: an invalid key or prefix.

        """
        from_env = [p for p in os.environ.get(ENV_ALLOW_MODULES, "").split(",") if p.strip()]
        key = signing_key() if process_key else configured_key()
        return cls(key, parse_allow_modules([*allow_modules, *from_env]))

    def allows_module(self, path: object) -> bool:
        """Whether function path ``path`` (``module:function``) lies under an allowed prefix.

        Files (``dir/file.py:function``) are never allowed by prefix: only a signature admits them.
        """
        if not isinstance(path, str):
            return False
        module = path.rpartition(":")[0]
        return any(module == p or module.startswith(p + ".") for p in self.allow_modules)

    def check(
        self,
        args: Mapping[str, Any],
        network_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        where: Where = "worker",
    ) -> str:
        """Accept ``args`` (stored start arguments) or raise; returns why they were accepted.

        Raises:
            UntrustedCodeError: neither a valid signature nor the allow-list
                admits them; the message names the function and what to set.

        """
        functions = {name: args[name] for name in FUNCTION_FIELDS if args.get(name) is not None}
        problem = self._signature_problem(args, network_id, prefix)
        if problem is None:
            assert self.key is not None  # a signature verified
            return f"signed with key {self.key.key_id}"
        if functions and all(self.allows_module(path) for path in functions.values()):
            return "allowed module"
        raise UntrustedCodeError(_refusal(network_id, functions, problem, where))

    def _signature_problem(self, args: Mapping[str, Any], network_id: str, prefix: str) -> str | None:
        """``None`` if the signature verifies with our key, else what is wrong with it."""
        signature = args.get(SIGNATURE_FIELD)
        if signature is None:
            return "they are not signed"
        if not isinstance(signature, Mapping) or signature.get("alg") != _ALGORITHM:
            return "their signature is not one this version can check"
        signer = signature.get("key_id")
        if signature.get("shared") is False and (self.key is None or signer != self.key.key_id):
            return (
                "they are signed with the private per-process key of the controller that stored "
                f"them (no {ENV_SIGNING_KEY} was set there)"
            )
        if self.key is None:
            return f"they are signed (key id {signer}) but {ENV_SIGNING_KEY} is not set here"
        if signer != self.key.key_id:
            return f"they are signed with another key (key id {signer}; the key here is {self.key.key_id})"
        try:
            expected = _mac(self.key, args, network_id, prefix)
        except ConfigError:
            return "they hold values that cannot be verified"
        mac = signature.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
            return (
                "their signature does not match them (changed after signing, or copied from another network)"
            )
        return None


def _refusal(network_id: str, functions: Mapping[str, Any], problem: str, where: Where) -> str:
    names = ", ".join(f"{name}={path!r}" for name, path in functions.items()) or "no function"
    first = next(iter(functions.values()), "module:function")
    module = first.rpartition(":")[0] if isinstance(first, str) else ""
    # A file path cannot be allowed by prefix: then suggest only the other ways.
    allowable = bool(_MODULE.fullmatch(module))
    if where == "worker":
        allow = f"allow its module (--allow-module {module} or {ENV_ALLOW_MODULES}={module}), "
        allow = allow if allowable else ""
        how = (
            f"name the function on this worker's command line (--fun {first}), {allow}or give the "
            f"controller and this worker the same secret in {ENV_SIGNING_KEY} (or a file named by "
            f"{ENV_SIGNING_KEY_FILE})"
        )
    else:
        allow = f"allow its module ({ENV_ALLOW_MODULES}={module}), " if allowable else ""
        how = (
            f"pass fun= to start_local_workers(), {allow}or set the secret that signed them in "
            f"{ENV_SIGNING_KEY} (or a file named by {ENV_SIGNING_KEY_FILE})"
        )
    return (
        f"refusing the start arguments stored for network {network_id!r} ({names}): {problem}. "
        f"Anyone who can write the network's keys can change them, so a {where} runs only code its "
        f"operator allowed: {how}"
    )

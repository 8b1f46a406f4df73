"""Anchoring published models: the registry records each version's manifest digest, signed with a key the
lake does not hold.

Every artifact of a version is checked against the sha256 in its manifest, but whoever can write the lake
can rewrite the manifest too. So at publication the registry entry of a version gets the sha256 of the
manifest's bytes and an HMAC-SHA256 over (version, that digest, promoted), keyed by `KFS_MODEL_KEY` or by a
key generated once in `$KFS_HOME/model.key` (mode 0600). A loader recomputes both and refuses a version
whose manifest, artifacts or entry were changed, and a production alias that points at a version its signed
entry does not call promoted.

What this protects against: anyone who can write the lake (a bucket's other users, a restored backup, a
bad script) but not read the key: they cannot swap a model, rewrite a manifest, point an artifact outside
its folder or promote a refused version. What it does not: a holder of the key (a machine that publishes can
sign anything), rolling the production alias back to an older version that was itself promoted, or
deleting versions; and it says nothing about whether the training data were honest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from core.settings import settings

KEY_FILE = "model.key"


class SignatureError(RuntimeError):
    pass


def model_key(create: bool = False) -> bytes:
    """The signing key: KFS_MODEL_KEY, else `$KFS_HOME/model.key` (created, mode 0600, when `create`)."""
    configured = settings()
    if configured.model_key:
        return configured.model_key.encode()
    path = configured.home / KEY_FILE
    if not path.exists():
        if not create:
            raise SignatureError(f"no model key: {path} does not exist and KFS_MODEL_KEY is unset (the versions of "
                                 "this lake were signed elsewhere: set KFS_MODEL_KEY to that key)")
        _create_key(path)
    if path.stat().st_mode & 0o077:
        raise SignatureError(f"{path} is readable by others (mode {path.stat().st_mode & 0o777:o}): chmod 600 it")
    return path.read_text().strip().encode()


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:   # another publisher created it first: use theirs
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def manifest_digest(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def sign_entry(key: bytes, version: str, digest: str, promoted: bool) -> str:
    message = f"kfs-model-version\n{version}\n{digest}\n{'promoted' if promoted else 'refused'}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_entry(entry: dict, manifest_bytes: bytes, key: bytes) -> None:
    """Raise SignatureError unless `entry` (a registry entry) is signed by `key` and names these manifest bytes."""
    version = entry.get("version")
    digest, signature = entry.get("manifest_sha256"), entry.get("signature")
    if not isinstance(digest, str) or not isinstance(signature, str):
        raise SignatureError(f"{version}: the registry entry is unsigned (published before models were signed, or "
                             "edited): republish with `kfs train`")
    expected = sign_entry(key, str(version), digest, entry.get("promoted") is True)
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(f"{version}: the registry entry's signature does not verify with this key (edited, or "
                             "signed with another KFS_MODEL_KEY)")
    if manifest_digest(manifest_bytes) != digest:
        raise SignatureError(f"{version}: manifest.json is not the manifest that was published (its sha256 differs "
                             "from the signed registry entry)")

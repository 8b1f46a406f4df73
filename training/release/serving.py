"""Loading published policies by alias, with verification and atomic hot reload.

A trading process keeps one `PolicyServer`; `act()` always uses a model that passed every check.
`refresh()` looks at the registry: when the alias points at a new version, the version is verified before
anything of it runs, then swapped in under a lock:

0. the registry entry is signed with this process's model key and names this manifest (sha256), and a
   production alias points at a version its signed entry calls promoted (training/release/signing.py);
1. the manifest was built for the feature schema this process computes (schema hash and input width);
2. every artifact is a file of the version's own folder and its sha256 matches the manifest (a flipped byte
   is refused before `torch.jit.load`);
3. the model reproduces its own recorded actions on recorded observations (a foreign or swapped model
   that still loads is refused), with the right output shape and within the latency budget.

On any failure the old model keeps serving, `refresh()` returns False and the reason is in `last_error`;
only when no model was ever loaded does it raise `PolicyLoadError`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from core.catalog import Lake
from features.schema import MODEL_FEATURES
from training.environment.spaces import MAX_SLOTS, N_ACTIONS, POSITION_FEATURES
from training.release.publish import (
    LATENCY_BUDGET_P99_US,
    PRODUCTION,
    feature_schema_hash,
    latency_us,
    quiet_torch_deprecations,
    read_registry,
    registry_entry,
    sha256_of,
)
from training.release.signing import SignatureError, model_key, verify_entry

MIN_BEHAVIOUR_AGREEMENT = 0.98  # int8 kernels may differ in a rare tie across CPUs; a different model cannot


class PolicyLoadError(RuntimeError):
    pass


class PolicyServer:
    def __init__(self, lake: Lake | None = None, alias: str = PRODUCTION,
                 latency_budget_p99_us: float = LATENCY_BUDGET_P99_US):
        self.lake = lake or Lake()
        self.alias = alias
        self.latency_budget = latency_budget_p99_us
        self._lock = threading.Lock()
        self._model: torch.jit.ScriptModule | None = None
        self.version: str | None = None
        self.manifest: dict | None = None
        self.last_error: str | None = None
        self.measured_latency_us: dict[str, float] | None = None   # of the last version loaded

    def _target_version(self) -> str:
        registry_path = self.lake.model_registry()
        if not self.lake.exists(registry_path):
            raise PolicyLoadError(f"no model registry at {registry_path}")
        try:
            registry = read_registry(self.lake)
        except ValueError as error:
            raise PolicyLoadError(str(error)) from None
        version = registry["aliases"].get(self.alias)
        if version is None:
            raise PolicyLoadError(f"alias {self.alias!r} points at no version yet")
        return version

    def load_version(self, version: str, require_promoted: bool = False) -> tuple[torch.jit.ScriptModule, dict]:
        """A version's int8 model and manifest, after every check of the module docstring (raises PolicyLoadError);
        `require_promoted`: only a version whose signed registry entry says the gate promoted it."""
        # On object storage, a local copy of the version's files (the checks below verify what was copied).
        folder = self.lake.local_copy(self.lake.model_version(version))
        manifest = self._signed_manifest(version, folder, require_promoted)
        _check_schema(version, manifest)
        artifact = _artifact(version, manifest, folder, "artifact")
        behaviour = _artifact(version, manifest, folder, "behaviour_check")
        _check_checksums(version, manifest, folder, (artifact.name, behaviour.name))
        quiet_torch_deprecations()
        try:
            model = torch.jit.load(str(artifact), map_location="cpu")
        except Exception as error:  # any broken or foreign file: refuse it, keep serving the old model
            raise PolicyLoadError(f"{version}: cannot load {artifact.name}: {one_line(error)}") from None
        try:
            recorded = torch.load(behaviour, weights_only=True)
        except Exception as error:  # noqa: BLE001 - a pickle of arbitrary objects is refused, never run
            raise PolicyLoadError(f"{version}: cannot load {behaviour.name}: {one_line(error)}") from None
        _check_behaviour(version, model, recorded)
        latency = latency_us(model, len(MODEL_FEATURES), calls=500)
        self.measured_latency_us = latency
        if latency["p99_us"] > self.latency_budget:
            raise PolicyLoadError(f"{version}: p99 latency {latency['p99_us']:.0f} us over {self.latency_budget:.0f} us "
                                  "(measured on this machine; a loaded machine measures more)")
        return model, manifest

    def _signed_manifest(self, version: str, folder, require_promoted: bool) -> dict:
        try:
            entry = registry_entry(read_registry(self.lake), version)
            if entry is None:
                raise PolicyLoadError(f"{version}: not in the model registry")
            manifest_bytes = (folder / "manifest.json").read_bytes()
            verify_entry(entry, manifest_bytes, model_key())
        except (SignatureError, ValueError, OSError) as error:
            raise PolicyLoadError(str(error) if not isinstance(error, OSError) else f"{version}: {error}") from None
        if require_promoted and entry.get("promoted") is not True:
            raise PolicyLoadError(f"{version}: alias {self.alias!r} points at a version the gate did not promote")
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("inputs"), dict):
            raise PolicyLoadError(f"{version}: manifest.json is not a model manifest")
        return manifest

    def load_twin(self, version: str, manifest: dict) -> torch.jit.ScriptModule:
        """A version's fp32 artifact, checksum verified: the float model the int8 one was quantized from, whose
        forecaster the forecast trader acts on when the version is evaluated."""
        folder = self.lake.local_copy(self.lake.model_version(version))
        if not manifest.get("artifact_fp32"):
            raise PolicyLoadError(f"{version}: the manifest names no fp32 artifact")
        twin = _artifact(version, manifest, folder, "artifact_fp32")
        _check_checksums(version, manifest, folder, (twin.name,))
        quiet_torch_deprecations()
        try:
            return torch.jit.load(str(twin), map_location="cpu")
        except Exception as error:  # noqa: BLE001 - a broken file is refused, with its reason
            raise PolicyLoadError(f"{version}: cannot load {twin.name}: {one_line(error)}") from None

    def refresh(self) -> bool:
        """Load the alias's version if it changed; True when a new model was swapped in."""
        try:
            version = self._target_version()
            if version == self.version:
                return False
            model, manifest = self.load_version(version, require_promoted=self.alias == PRODUCTION)
        except Exception as error:  # noqa: BLE001 - a bad version must never take down a serving process
            self.last_error = str(error) if isinstance(error, PolicyLoadError) else f"{type(error).__name__}: {error}"
            if self._model is None:
                raise PolicyLoadError(self.last_error) from None
            return False
        with self._lock:
            self._model, self.version, self.manifest = model, version, manifest
        self.last_error = None
        return True

    def act(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        with self._lock:
            model = self._model
        if model is None:
            raise PolicyLoadError("no model loaded: call refresh() first")
        with torch.no_grad():
            return model(obs, live)

    def current(self) -> tuple[torch.jit.ScriptModule | None, str | None]:
        """The model and its version as one consistent pair (a hot reload swaps both at once)."""
        with self._lock:
            return self._model, self.version


def _check_schema(version: str, manifest: dict) -> None:
    running = feature_schema_hash(list(MODEL_FEATURES))
    if manifest.get("feature_schema_hash") != running or manifest.get("feature_names") != list(MODEL_FEATURES):
        raise PolicyLoadError(f"{version}: built for feature schema {manifest.get('feature_schema_hash')}, this process "
                              f"computes {running}; retrain or run the code version that published it")
    _, slots, width = manifest["inputs"]["obs"]
    if (slots, width) != (MAX_SLOTS, len(MODEL_FEATURES) + POSITION_FEATURES):
        raise PolicyLoadError(f"{version}: expects observations of {slots} x {width}, this process builds "
                              f"{MAX_SLOTS} x {len(MODEL_FEATURES) + POSITION_FEATURES}")


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _artifact(version: str, manifest: dict, folder, field: str) -> Path:
    """The file a manifest field names, only as a plain name inside the version's folder (no path, no link)."""
    name = manifest.get(field)
    folder = Path(folder)
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise PolicyLoadError(f"{version}: {field} {name!r} is not a file name inside the version's folder")
    path = folder / name
    if path.is_symlink() or path.resolve().parent != folder.resolve():
        raise PolicyLoadError(f"{version}: {field} {name!r} leads outside the version's folder")
    return path


def _check_checksums(version: str, manifest: dict, folder, names: tuple[str, ...]) -> None:
    digests = manifest.get("sha256")
    if not isinstance(digests, dict):
        raise PolicyLoadError(f"{version}: the manifest has no checksums")
    for name in names:
        if name not in digests:
            raise PolicyLoadError(f"{version}: the manifest has no checksum for {name}")
        if sha256_of(folder / name) != digests[name]:
            raise PolicyLoadError(f"{version}: {name} does not match its sha256 in the manifest (corrupt or replaced)")


def _check_behaviour(version: str, model: torch.jit.ScriptModule, recorded: dict) -> None:
    try:
        with torch.no_grad():
            actions = model(recorded["obs"], recorded["live"])
    except Exception as error:  # noqa: BLE001 - a model that cannot act on real input is refused
        raise PolicyLoadError(f"{version}: fails on recorded observations: {error}") from None
    expected = recorded["actions"]
    if tuple(actions.shape) != tuple(expected.shape) or actions.dtype != torch.long or \
            int(actions.min()) < 0 or int(actions.max()) >= N_ACTIONS:
        raise PolicyLoadError(f"{version}: output {tuple(actions.shape)} {actions.dtype} is not one action per slot")
    live = recorded["live"]
    agreement = float(((actions == expected) & live).sum() / live.sum().clamp(min=1))
    if agreement < MIN_BEHAVIOUR_AGREEMENT:
        raise PolicyLoadError(f"{version}: reproduces only {agreement:.0%} of its recorded actions: not the model "
                              "that was published")

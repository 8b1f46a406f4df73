"""Loading published policies by alias, with checks and atomic hot reload.

A trading process keeps one `PolicyServer`; `act()` always uses a model that passed its checks.
`refresh()` looks at the registry: when the alias points at a new version it loads it with plain
`torch.jit.load`, checks output shape and latency, and swaps it in under a lock. On any failure the
old model stays and the error is kept in `last_error`.
"""

from __future__ import annotations

import threading

import torch

from core.catalog import Lake
from training.publish import (
    LATENCY_BUDGET_P99_US,
    PRODUCTION,
    latency_us,
    quiet_torch_deprecations,
)


class PolicyLoadError(RuntimeError):
    pass


class PolicyServer:
    def __init__(self, lake: Lake | None = None, alias: str = PRODUCTION, latency_budget_p99_us: float = LATENCY_BUDGET_P99_US):
        self.lake = lake or Lake()
        self.alias = alias
        self.latency_budget = latency_budget_p99_us
        self._lock = threading.Lock()
        self._model: torch.jit.ScriptModule | None = None
        self.version: str | None = None
        self.manifest: dict | None = None
        self.last_error: str | None = None

    def _target_version(self) -> str:
        registry_path = self.lake.model_registry()
        if not self.lake.exists(registry_path):
            raise PolicyLoadError(f"no model registry at {registry_path}")
        registry = self.lake.read_json(registry_path)
        version = registry.get("aliases", {}).get(self.alias)
        if version is None:
            raise PolicyLoadError(f"alias {self.alias!r} points at no version yet")
        return version

    def _load_checked(self, version: str) -> tuple[torch.jit.ScriptModule, dict]:
        folder = self.lake.model_version(version)
        manifest = self.lake.read_json(folder / "manifest.json")
        quiet_torch_deprecations()
        try:
            model = torch.jit.load(str(folder / manifest["artifact"]))
        except Exception as error:  # any broken or foreign file: refuse it, keep serving the old model
            raise PolicyLoadError(f"{version}: cannot load {manifest['artifact']}: {error}") from None
        _, slots, width = manifest["inputs"]["obs"]
        obs = torch.zeros((1, slots, width))
        live = torch.ones((1, slots), dtype=torch.bool)
        with torch.no_grad():
            out = model(obs, live)
        if tuple(out.shape) != (1, slots) or out.dtype != torch.long or int(out.min()) < 0 or int(out.max()) > 4:
            raise PolicyLoadError(f"{version}: output {tuple(out.shape)} {out.dtype} is not one action per slot")
        latency = latency_us(model, width - 3, calls=500)
        if latency["p99_us"] > self.latency_budget:
            raise PolicyLoadError(f"{version}: p99 latency {latency['p99_us']:.0f} us over {self.latency_budget:.0f} us")
        return model, manifest

    def refresh(self) -> bool:
        """Load the alias's version if it changed; True when a new model was swapped in."""
        try:
            version = self._target_version()
            if version == self.version:
                return False
            model, manifest = self._load_checked(version)
        except (PolicyLoadError, OSError, KeyError, ValueError) as error:
            self.last_error = str(error)
            if self._model is None:
                raise PolicyLoadError(str(error)) from None
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

"""The serving loader refuses what it cannot verify, and the model that serves keeps serving."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from tests.training.test_publish import _validation, _with_usable_stage
from training.release.publish import PRODUCTION, publish, read_registry, sha256_of
from training.release.serving import PolicyLoadError, PolicyServer

WINNING = _validation(0.5, 0.5)
NO_BUDGET = float("inf")  # latency is its own test; a loaded CI machine must not decide these


@pytest.fixture
def serving(published, tmp_path):
    """A lake with one promoted version being served, and a way to publish (and then tamper with) another."""
    from core.catalog import Lake
    from training.pipeline import load_candidate
    from training.release.runs import validation_observations

    source, data, summary, _, _ = published
    lake = Lake(tmp_path)
    policy, _ = load_candidate(source, data)
    obs = validation_observations(data, max_steps=60)

    def publish_promoted() -> str:
        manifest = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions,
                           _with_usable_stage(summary), WINNING, obs, latency_budget_p99_us=NO_BUDGET)
        assert read_registry(lake)["aliases"][PRODUCTION] == manifest["version"]
        return manifest["version"]

    first = publish_promoted()
    server = PolicyServer(lake, latency_budget_p99_us=NO_BUDGET)
    assert server.refresh() and server.version == first
    return lake, server, publish_promoted, obs


def _refused(server: PolicyServer, served: str, reason: str, obs) -> None:
    assert server.refresh() is False, "a version that fails verification was swapped in"
    assert reason in server.last_error, server.last_error
    assert server.version == served and server.act(obs[0][:2], obs[1][:2]).shape == (2, 5)


def _reseal(lake, version: str, name: str) -> None:
    """What an attacker or a buggy copy tool would also do: update the manifest's checksum of `name`."""
    manifest_path = lake.model_version(version) / "manifest.json"
    manifest = lake.read_json(manifest_path)
    manifest["sha256"][name] = sha256_of(lake.model_version(version) / name)
    lake.write_json(manifest_path, manifest)


def _flip_bytes_inside_the_archive(path) -> None:
    """Change a stored weight tensor inside the TorchScript zip, keeping the archive valid."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    tensors = [i for i, (info, data) in enumerate(entries) if "/data/" in info.filename and len(data) > 256]
    target = max(tensors, key=lambda i: len(entries[i][1]))
    info, data = entries[target]
    flipped = bytearray(data)
    for k in range(0, len(flipped), 3):
        flipped[k] ^= 0x5A
    entries[target] = (info, bytes(flipped))
    with zipfile.ZipFile(path, "w") as archive:
        for info, payload in entries:
            archive.writestr(info, payload)


def test_a_model_with_flipped_bytes_is_refused_by_its_checksum(serving):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    _flip_bytes_inside_the_archive(lake.model_version(tampered) / "policy_int8.pt")
    _refused(server, served, "sha256", obs)


class AlwaysBuys(torch.nn.Module):
    def forward(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        return torch.ones(live.shape, dtype=torch.long)


class Raises(torch.nn.Module):
    def forward(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        if obs.shape[0] > 1:
            raise RuntimeError("cannot act on a batch")
        return torch.zeros(live.shape, dtype=torch.long)


@pytest.mark.parametrize("foreign, reason", [(AlwaysBuys, "recorded actions"), (Raises, "fails on recorded")])
def test_a_foreign_valid_torchscript_is_refused_by_behaviour(serving, foreign, reason):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    torch.jit.script(foreign()).save(str(lake.model_version(tampered) / "policy_int8.pt"))
    _reseal(lake, tampered, "policy_int8.pt")
    _refused(server, served, reason, obs)


@pytest.mark.parametrize("field, value, reason", [
    ("feature_schema_hash", "0000000000000000", "feature schema"),
    ("inputs", {"obs": ["batch", 5, 7], "live": ["batch", 5]}, "expects observations"),
])
def test_a_manifest_for_another_schema_or_width_is_refused(serving, field, value, reason):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    path = lake.model_version(tampered) / "manifest.json"
    manifest = lake.read_json(path)
    manifest[field] = value
    lake.write_json(path, manifest)
    _refused(server, served, reason, obs)


def test_without_a_served_model_a_bad_version_raises_one_clear_error(serving):
    lake, _, publish_promoted, _ = serving
    tampered = publish_promoted()
    (lake.model_version(tampered) / "policy_int8.pt").write_bytes(io.BytesIO(b"garbage").getvalue())
    fresh = PolicyServer(lake, latency_budget_p99_us=NO_BUDGET)
    with pytest.raises(PolicyLoadError, match="sha256"):
        fresh.refresh()

"""The serving loader refuses what it cannot verify, and the model that serves keeps serving."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from tests.training.test_publish import _validation, _with_usable_stage
from training.release.publish import PRODUCTION, publish, read_registry, sha256_of
from training.release.serving import PolicyLoadError, PolicyServer
from training.release.signing import manifest_digest, model_key, sign_entry

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


def _resign(lake, version: str, promoted: bool | None = None) -> None:
    """What only a holder of the model key can do: sign the version's current manifest in the registry (so
    that the checks behind the signature are tested on their own)."""
    digest = manifest_digest((lake.model_version(version) / "manifest.json").read_bytes())

    def change(registry: dict) -> dict:
        for entry in registry["versions"]:
            if entry["version"] == version:
                entry["promoted"] = entry["promoted"] if promoted is None else promoted
                entry["manifest_sha256"] = digest
                entry["signature"] = sign_entry(model_key(), version, digest, entry["promoted"])
        return registry
    lake.update_json(lake.model_registry(), change)


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
    _resign(lake, tampered)
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
    _resign(lake, tampered)
    _refused(server, served, reason, obs)


def test_without_a_served_model_a_bad_version_raises_one_clear_error(serving):
    lake, _, publish_promoted, _ = serving
    tampered = publish_promoted()
    (lake.model_version(tampered) / "policy_int8.pt").write_bytes(io.BytesIO(b"garbage").getvalue())
    fresh = PolicyServer(lake, latency_budget_p99_us=NO_BUDGET)
    with pytest.raises(PolicyLoadError, match="sha256"):
        fresh.refresh()


def _swap_in_always_buys(lake, version: str) -> None:
    """F9 of the adversarial review: a foreign model, its behaviour check rewritten to match, both checksums
    updated in the manifest: every check inside the version's folder agrees."""
    folder = lake.model_version(version)
    model = torch.jit.script(AlwaysBuys())
    model.save(str(folder / "policy_int8.pt"))
    recorded = torch.load(folder / "behaviour_check.pt", weights_only=True)
    recorded["actions"] = model(recorded["obs"], recorded["live"])
    torch.save(recorded, folder / "behaviour_check.pt")
    _reseal(lake, version, "policy_int8.pt")
    _reseal(lake, version, "behaviour_check.pt")


def test_a_swapped_model_with_a_matching_manifest_is_refused_by_the_signed_registry(serving):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    _swap_in_always_buys(lake, tampered)
    _refused(server, served, "not the manifest that was published", obs)


def test_a_forged_registry_entry_or_another_key_is_refused(serving, monkeypatch):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    _swap_in_always_buys(lake, tampered)

    def forge(registry: dict) -> dict:   # the digest of the new manifest, without the key
        for entry in registry["versions"]:
            if entry["version"] == tampered:
                entry["manifest_sha256"] = manifest_digest((lake.model_version(tampered) / "manifest.json").read_bytes())
        return registry
    lake.update_json(lake.model_registry(), forge)
    _refused(server, served, "signature does not verify", obs)
    honest = publish_promoted()
    monkeypatch.setenv("KFS_MODEL_KEY", "another-key-" + "9" * 32)
    fresh = PolicyServer(lake, latency_budget_p99_us=NO_BUDGET)
    with pytest.raises(PolicyLoadError, match=f"{honest}: the registry entry's signature does not verify"):
        fresh.refresh()


def test_the_alias_serves_only_a_version_signed_as_promoted(serving):
    lake, server, publish_promoted, obs = serving
    served, refused = server.version, publish_promoted()
    _resign(lake, refused, promoted=False)      # what the gate said about it, signed
    _refused(server, served, "did not promote", obs)


@pytest.mark.parametrize("artifact", ["/any/absolute/path/evil.pt", "../evil.pt", "sub/evil.pt", ".."])
def test_an_artifact_outside_its_version_folder_is_refused_even_when_signed(serving, tmp_path, artifact):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    folder = lake.model_version(tampered)
    path = folder / "manifest.json"
    manifest = lake.read_json(path)
    manifest["artifact"] = artifact
    manifest["sha256"][artifact] = manifest["sha256"]["policy_int8.pt"]
    lake.write_json(path, manifest)
    _resign(lake, tampered)
    _refused(server, served, "inside the version's folder", obs)


def test_a_linked_artifact_is_refused(serving, tmp_path):
    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    folder = lake.model_version(tampered)
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes((folder / "policy_int8.pt").read_bytes())
    (folder / "policy_int8.pt").unlink()
    (folder / "policy_int8.pt").symlink_to(outside)
    _refused(server, served, "leads outside", obs)


def test_a_pickle_as_behaviour_check_is_named_and_never_run(serving, tmp_path):
    import pickle

    lake, server, publish_promoted, obs = serving
    served, tampered = server.version, publish_promoted()
    marker = tmp_path / "ran"
    (lake.model_version(tampered) / "behaviour_check.pt").write_bytes(
        pickle.dumps(_Touch(str(marker))))
    _reseal(lake, tampered, "behaviour_check.pt")
    _resign(lake, tampered)
    _refused(server, served, "cannot load behaviour_check.pt", obs)
    assert not marker.exists()


class _Touch:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("registry, reason", [
    ("[1, 2]", "a JSON list, not an object"),
    ('{"versions": [], "aliases": {"production": 7}}', "'aliases' is not an object of version names"),
    ("{not json", "is not JSON"),
])
def test_a_registry_that_is_not_one_is_refused_in_one_line(serving, registry, reason):
    lake, server, _, obs = serving
    served = server.version
    lake.model_registry().write_text(registry)
    _refused(server, served, reason, obs)


def test_a_generated_key_is_private_to_its_owner(tmp_path, monkeypatch):
    from training.release.signing import SignatureError

    monkeypatch.delenv("KFS_MODEL_KEY", raising=False)
    monkeypatch.setenv("KFS_HOME", str(tmp_path / "home"))
    with pytest.raises(SignatureError, match="no model key"):
        model_key()
    key = model_key(create=True)
    path = tmp_path / "home" / "model.key"
    assert (path.stat().st_mode & 0o777) == 0o600 and len(key) == 64 and model_key() == key
    path.chmod(0o644)
    with pytest.raises(SignatureError, match="readable by others"):
        model_key()

"""The model registry on both backends: training, validation, publication and serving with the lake in a
bucket of a real S3 server (SeaweedFS), and registry updates that never lose a concurrent publisher's entry."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import lake_backend


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_registry_updates_are_all_kept(backend, request, tmp_path_factory):
    with lake_backend(backend, request, tmp_path_factory) as lake:
        path = lake.model_registry()
        read_by = []

        def append(name):
            def change(current):
                current = current or {"versions": []}
                read_by.append(name)
                time.sleep(0.05)        # every writer reads before any writes: a plain PUT would lose entries
                return {"versions": current["versions"] + [name]}
            lake.update_json(path, change)

        writers = [threading.Thread(target=append, args=(f"v{k}",)) for k in range(6)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert sorted(lake.read_json(path)["versions"]) == [f"v{k}" for k in range(6)]
        if backend == "s3":
            assert len(read_by) > 6, "no writer lost a race: the test did not exercise the conditional PUT"


def test_train_validate_publish_and_serve_with_the_lake_in_a_bucket(built_store, object_store, s3_lake, tmp_path):
    """The training job's own assets (what `kfs train` runs, the README's cluster walk-through), on a bucket."""
    import dagster as dg

    from core.catalog import Lake
    from core.object_store import s3_filesystem
    from orchestration.assets.training import policy_validation, published_policy, trained_policy
    from orchestration.resources import LakeResource
    from training.data.cache import load_market_data
    from training.release.publish import PRODUCTION, read_registry
    from training.release.serving import PolicyServer

    _, local, _ = built_store
    lake = Lake(s3_lake)
    filesystem = s3_filesystem()
    for entry in local.root.iterdir():    # the feature store and the rest; not models other tests published
        if entry.name != "models":
            filesystem.put(str(entry), f"{lake.root.path}/{entry.name}", recursive=True)

    data = load_market_data(lake)
    assert sum(len(m.time_ms) for m in data.markets.values()) == \
        sum(len(m.time_ms) for m in load_market_data(local).markets.values())
    run = dg.materialize([trained_policy, policy_validation, published_policy], resources={"lake": LakeResource(root=s3_lake)},
                         run_config={"ops": {"trained_policy": {"config": {"profile": "smoke", "steps": 32 * 32 * 2}}}},
                         raise_on_error=True)
    assert run.success
    trained = {m.asset_key.to_user_string(): m.metadata for m in run.asset_materializations_for_node("trained_policy")}
    assert trained["trained_policy"]["learning_curves"].value.startswith("![learning curves](data:image/png;base64,")
    candidate = lake.candidate().path
    assert {"policy_state.pt", "training.json", "learning_curves.csv", "learning_curves.png", "validation.json",
            "validation.md"} <= {name.rsplit("/", 1)[1] for name in filesystem.ls(candidate)}

    (published,) = run.asset_materializations_for_node("published_policy")
    version = published.metadata["version"].value
    files = {name.rsplit("/", 1)[1] for name in filesystem.ls(lake.model_version(version).path)}
    assert {"manifest.json", "policy_int8.pt", "policy_fp32.pt", "behaviour_check.pt"} <= files
    registry = read_registry(lake)
    assert [entry["version"] for entry in registry["versions"]] == [version]
    assert (registry["aliases"].get(PRODUCTION) == version) == published.metadata["promoted"].value
    # No latency budget: this test is about storage, and CI runs it beside other tests on two cores
    server = PolicyServer(lake, alias=PRODUCTION, latency_budget_p99_us=float("inf"))
    model, loaded = server.load_version(version)       # downloaded, signature, checksums and behaviour verified
    assert loaded["version"] == version and model is not None
    assert not (tmp_path / "s3:").exists()

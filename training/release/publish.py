"""Export, measure and register policies: TorchScript int8 artifacts, a manifest, a promotion gate.

Layout (the catalog's model locations): `<version>/{policy_int8.pt, policy_fp32.pt, manifest.json}` and
the registry ({"versions": [...], "aliases": {"production": version}}). Every version is kept; the
`production` alias moves only through `promotion_gate`: on validation markets (which no training choice
read) the policy's 95% CI is above zero, it is non-inferior to the best single-feature rule and to the forecast
trader it was warm-started from (Holm-adjusted paired intervals, low end above -NON_INFERIORITY_MARGIN), the
stage it publishes was usable on the select markets, and its int8 p99 latency is within budget (1 ms, batch
1, one thread). The decision names the published stage and lists every comparison. Each registry entry
carries its manifest's sha256, signed (training/release/signing.py).
"""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from core.catalog import Lake, write_json_atomic
from features.schema import EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from training.environment.spaces import MAX_SLOTS, POSITION_FEATURES
from training.learners.policy import GreedyPolicy, MarketPolicy
from training.release.signing import manifest_digest, model_key, sign_entry

LATENCY_BUDGET_P99_US = 1000.0
PRODUCTION = "production"
# The gate asks the policy to be no worse than these by more than NON_INFERIORITY_MARGIN dollars a market
# (Holm-adjusted intervals, training/evaluation/scoring.py:holm_non_inferiority, computed when a split is
# scored): the fair simple baseline and the policy's own supervised stage. The margin is about one round
# trip of a 10-contract lot near 50c (a cent of spread and two taker fees of 1.8c, per contract): a policy
# may trail them by less than one unlucky trade per market.
GATE_BASELINES = ("best_rule", "forecast_trader")
NON_INFERIORITY_MARGIN = 0.50


def quiet_torch_deprecations():
    """TorchScript and torch.ao.quantization warn that they are deprecated (they work in 2.13);
    silence exactly those warnings, never errors."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.(jit|ao)")
    warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)


def feature_schema_hash(feature_names: list[str]) -> str:
    dtypes = {c.name: c.dtype for c in EVENT_COLUMNS}
    text = EVENTS_SCHEMA_VERSION + "|" + ",".join(f"{n}:{dtypes[n]}" for n in feature_names)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def example_inputs(n_features: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    obs = torch.zeros((batch, MAX_SLOTS, n_features + POSITION_FEATURES))
    live = torch.ones((batch, MAX_SLOTS), dtype=torch.bool)
    return obs, live


def servable(model: nn.Module) -> nn.Module:
    """What is exported for a published stage, (obs, live) -> one action per slot: the policy network's greedy
    choice (warm start, PPO) or the forecast trader as it is (training/learners/forecast_trader.TraderPolicy)."""
    return GreedyPolicy(model).eval() if isinstance(model, MarketPolicy) else model.eval()


def script_fp32(model: nn.Module) -> torch.jit.ScriptModule:
    quiet_torch_deprecations()
    return torch.jit.script(servable(model))


def script_int8(model: nn.Module) -> torch.jit.ScriptModule:
    """Dynamic int8 quantization of every Linear layer, then TorchScript."""
    quiet_torch_deprecations()
    return torch.jit.script(torch.ao.quantization.quantize_dynamic(servable(model), {nn.Linear}, dtype=torch.qint8))


def twin_forecaster(twin: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The forecaster inside an fp32 artifact, whichever stage it serves: what the forecast trader acts on when
    a candidate or a published version is scored."""
    return twin.forecaster if hasattr(twin, "forecaster") else twin.policy.forecaster


def latency_us(module: torch.jit.ScriptModule, n_features: int, calls: int = 2000, batch: int = 1) -> dict[str, float]:
    """p50/p99 of one call over `batch` observations (default 1), one thread, after warm-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        obs, live = example_inputs(n_features, batch)
        obs.normal_()
        with torch.no_grad():
            for _ in range(100):
                module(obs, live)
            samples = []
            for _ in range(calls):
                started = time.perf_counter_ns()
                module(obs, live)
                samples.append((time.perf_counter_ns() - started) / 1000.0)
    finally:
        torch.set_num_threads(threads)
    samples.sort()
    return {"p50_us": statistics.median(samples), "p99_us": samples[int(0.99 * (len(samples) - 1))]}


def action_agreement(a: torch.jit.ScriptModule, b: torch.jit.ScriptModule, obs: torch.Tensor, live: torch.Tensor) -> float:
    """Share of live slots where the two models pick the same action."""
    with torch.no_grad():
        same = (a(obs, live) == b(obs, live)) & live
    return float(same.sum() / live.sum().clamp(min=1))


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def published_stage(training: dict) -> str:
    """The stage a training summary's candidate publishes (training/pipeline.py:choose_stage's choice; a run
    without a stage choice publishes the policy network as trained: PPO)."""
    return ((training.get("stages") or {}).get("selection") or {}).get("kept", "ppo")


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]     # why not (empty when promoted)
    comparisons: list[str]  # every comparison with its interval, whatever the outcome


def promotion_gate(validation: dict, latency: dict, latency_budget_p99_us: float, selection: dict | None = None
                   ) -> GateDecision:
    """Promote only if the policy's CI is above zero, it is non-inferior to every one of GATE_BASELINES
    (`validation["non_inferiority"]`, Holm-adjusted), the published stage was usable on the select markets
    (`selection`, the training summary's stage choice) and its int8 p99 latency is within budget."""
    table, comparison = validation["table"], validation["comparison"]
    policy = next((row for row in table if row["strategy"] == "policy"), None)
    reasons, lines = [], []
    if policy is None:
        return GateDecision(False, ["no policy row in the validation table"], [])
    if selection:
        lines.append(f"published stage: {selection['kept']} (the best usable learner stage on "
                     f"{selection.get('markets', '?')} select markets)")
        if not selection.get("usable", True):
            reasons.append(f"no stage was usable on the select markets (unusable: "
                           f"{', '.join(selection.get('unusable', []))})")
    lines.append(f"policy {policy['mean_return_dollars']:+.2f} $/market, 95% CI "
                 f"[{policy['ci_low']:+.2f}, {policy['ci_high']:+.2f}] on {policy['markets']} markets")
    if policy["ci_low"] <= 0:
        reasons.append("the policy's 95% CI is not above zero")
    for name, diff in comparison.items():
        lines.append(f"policy - {name}: {diff['mean']:+.2f} $/market, 95% CI [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}]")
    tests = validation.get("non_inferiority") or {}
    for name in GATE_BASELINES:
        test = tests.get(name)
        if test is None:
            reasons.append(f"no non-inferiority comparison with {name}")
            continue
        lines.append(f"non-inferiority to {name}: policy - {name} {test['mean']:+.2f} $/market, Holm-adjusted "
                     f"{test['confidence']:.1%} CI [{test['ci_low']:+.2f}, {test['ci_high']:+.2f}], margin "
                     f"-{test['margin']:.2f}: {'holds' if test['non_inferior'] else 'fails'}")
        if not test["non_inferior"]:
            reasons.append(f"not non-inferior to {name}: Holm-adjusted CI low {test['ci_low']:+.2f} is not above "
                           f"-{test['margin']:.2f} (or an earlier comparison of the step-down failed)")
    lines.append(f"int8 p99 latency {latency['p99_us']:.0f} us (budget {latency_budget_p99_us:.0f} us)")
    if latency["p99_us"] > latency_budget_p99_us:
        reasons.append(f"int8 p99 latency {latency['p99_us']:.0f} us exceeds {latency_budget_p99_us:.0f} us")
    return GateDecision(not reasons, reasons, lines)


BEHAVIOUR_CHECK = "behaviour_check.pt"
BEHAVIOUR_SAMPLE = 512


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def behaviour_sample(model: torch.jit.ScriptModule, obs: torch.Tensor, live: torch.Tensor,
                     size: int = BEHAVIOUR_SAMPLE) -> dict[str, torch.Tensor]:
    """Recorded observations and the published model's actions on them: a loader replays them to prove it
    serves this model. Observations where the model trades come first (a model that never trades, or one
    that always buys, is told apart from this one on those)."""
    with torch.no_grad():
        actions = model(obs, live)
    trades = ((actions != 0) & live).any(-1)
    order = torch.cat([torch.nonzero(trades).flatten(), torch.nonzero(~trades).flatten()])[:size]
    return {"obs": obs[order].clone(), "live": live[order].clone(), "actions": actions[order].clone()}


def empty_registry() -> dict:
    return {"versions": [], "aliases": {}}


def read_registry(lake: Lake) -> dict:
    path = lake.model_registry()
    if not lake.exists(path):
        return empty_registry()
    try:
        registry = lake.read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not JSON ({error}): restore it from a backup, or move it aside and republish") from None
    problem = registry_problem(registry)
    if problem:
        raise ValueError(f"{path} is not a model registry: {problem}")
    return registry


def registry_problem(registry) -> str | None:
    """What makes `registry` something other than {"versions": [{"version": str, ...}], "aliases": {str: str}}."""
    if not isinstance(registry, dict):
        return f"a JSON {type(registry).__name__}, not an object"
    versions, aliases = registry.get("versions"), registry.get("aliases")
    if not isinstance(versions, list) or not all(isinstance(v, dict) and isinstance(v.get("version"), str)
                                                 for v in versions):
        return "'versions' is not a list of entries with a version name"
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        return "'aliases' is not an object of version names"
    return None


def registry_entry(registry: dict, version: str) -> dict | None:
    entries = [entry for entry in registry["versions"] if entry["version"] == version]
    return entries[-1] if entries else None


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%S%fZ")


def publish(lake: Lake, policy: nn.Module, feature_names: list[str], mean, std, partitions: list[str],
            training: dict, validation: dict, validation_obs: tuple[torch.Tensor, torch.Tensor],
            latency_budget_p99_us: float = LATENCY_BUDGET_P99_US) -> dict:
    """Write artifacts and manifest for a new version, register it, move `production` if the gate passes."""
    version = new_version()
    key = model_key(create=True)   # before any work: a publisher without its key fails now
    if lake.exists(lake.model_version(version) / "manifest.json"):
        raise FileExistsError(f"model version {version} exists already")
    with lake.local_folder(lake.model_version(version), last=("manifest.json",)) as folder:
        manifest = _write_version(folder, version, policy, feature_names, mean, std, partitions, training, validation,
                                  validation_obs, latency_budget_p99_us)
        digest = manifest_digest((folder / "manifest.json").read_bytes())
    # The registry moves after every file of the version is in place; the update never loses a concurrent
    # publisher's entry (an exclusive lock locally, a conditional PUT on object storage).
    promoted = manifest["promotion"]["promoted"] is True
    signature = sign_entry(key, version, digest, promoted)

    def register(registry: dict | None) -> dict:
        registry = registry or empty_registry()
        problem = registry_problem(registry)
        if problem:
            raise ValueError(f"{lake.model_registry()} is not a model registry: {problem}")
        registry["versions"].append({"version": version, "path": version, "created_at": manifest["created_at"],
                                     "promoted": promoted, "reasons": manifest["promotion"]["reasons"],
                                     "manifest_sha256": digest, "signature": signature})
        if promoted:
            registry["aliases"][PRODUCTION] = version
        return registry

    lake.update_json(lake.model_registry(), register)
    return manifest


def _write_version(folder: Path, version: str, policy: nn.Module, feature_names: list[str], mean, std,
                   partitions: list[str], training: dict, validation: dict,
                   validation_obs: tuple[torch.Tensor, torch.Tensor], latency_budget_p99_us: float) -> dict:
    """The artifacts of a version in a local folder, checked and measured, then its manifest (written last)."""
    fp32, int8 = script_fp32(policy), script_int8(policy)
    fp32.save(str(folder / "policy_fp32.pt"))
    int8.save(str(folder / "policy_int8.pt"))
    reloaded_int8 = torch.jit.load(str(folder / "policy_int8.pt"))
    reloaded_fp32 = torch.jit.load(str(folder / "policy_fp32.pt"))
    agreement = action_agreement(reloaded_fp32, reloaded_int8, *validation_obs)
    torch.save(behaviour_sample(reloaded_int8, *validation_obs), folder / BEHAVIOUR_CHECK)
    latency = {"int8": latency_us(reloaded_int8, len(feature_names)), "fp32": latency_us(reloaded_fp32, len(feature_names))}
    decision = promotion_gate(validation, latency["int8"], latency_budget_p99_us, training.get("stages", {}).get("selection"))
    manifest = {
        "version": version, "created_at": datetime.now(timezone.utc).isoformat(), "code_version": code_version(),
        "artifact": "policy_int8.pt", "artifact_fp32": "policy_fp32.pt", "behaviour_check": BEHAVIOUR_CHECK,
        "stage": published_stage(training),
        # Written before the manifest; a loader refuses a file whose checksum differs.
        "sha256": {name: sha256_of(folder / name) for name in ("policy_int8.pt", "policy_fp32.pt", BEHAVIOUR_CHECK)},
        "inputs": {"obs": ["batch", MAX_SLOTS, len(feature_names) + POSITION_FEATURES], "live": ["batch", MAX_SLOTS]},
        "output": "action per slot: 0 HOLD, 1 BUY_YES, 2 SELL_YES, 3 BUY_NO, 4 SELL_NO",
        "feature_names": feature_names, "feature_schema_version": EVENTS_SCHEMA_VERSION,
        "feature_schema_hash": feature_schema_hash(feature_names),
        "normalization": {"mean": [float(x) for x in mean], "std": [float(x) for x in std]},
        "training_partitions": partitions, "training": training,
        "metrics": {row["strategy"]: row for row in validation["table"]},
        "baseline_comparison": validation["comparison"], "non_inferiority": validation.get("non_inferiority"),
        "recovery": validation.get("recovery"),
        "best_rule": validation.get("best_rule"), "baselines": validation.get("baselines"),
        "latency_us": latency, "int8_fp32_action_agreement": agreement,
        "complexity_tiers": training.get("stages", {}).get("complexity_tiers"),
        "promotion": {"promoted": decision.promote, "reasons": decision.reasons, "comparisons": decision.comparisons,
                      "non_inferiority_margin_dollars": NON_INFERIORITY_MARGIN},
    }
    write_json_atomic(folder / "manifest.json", manifest)
    return manifest

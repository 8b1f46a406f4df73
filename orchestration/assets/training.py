"""Training, validation and publishing assets: thin wrappers around training.pipeline and training.release.runs.

The training code is imported when an asset runs, not when the definitions load: every process that loads
them (a `kfs` command, each step of the multiprocess executor, each dask worker) would otherwise import torch,
about four seconds each, for ingest and feature steps that never train.
"""


import dagster as dg
from pydantic import Field

from orchestration.metadata import figure, pairs_table, rows_table
from orchestration.resources import LakeResource
from training.profiles import DEFAULT_PROFILE, PROFILE_NAMES

TRAINING_GROUP = "policy"
AGREEMENT_CHECK = "int8_matches_fp32_actions"
MIN_AGREEMENT = 0.99


STRATEGY_COLUMNS = [("strategy", "string"), ("markets", "int"), ("mean_return_dollars", "float"), ("ci_low", "float"),
                    ("ci_high", "float"), ("pct_profitable", "float"), ("cross_market_sharpe", "float"), ("orders", "int")]


class TrainingRunConfig(dg.Config):
    profile: str = Field(DEFAULT_PROFILE, description="training profile: " + ", ".join(PROFILE_NAMES))
    steps: int | None = Field(None, description="PPO steps of this run (over KFS_TRAIN_STEPS and the profile's)")
    seconds: float | None = Field(None, description="time limit of this run (over KFS_TRAIN_SECONDS and the profile's)")


@dg.asset(group_name=TRAINING_GROUP, deps=["markets", "split_registry", "features_events"], kinds={"pytorch"},
          description="Forecaster of forward mid moves -> forecast trader -> warm start (distilled) -> PPO on "
                      "event-time episodes of training markets; a fixed amount of work per stage (the run config's "
                      "profile; PPO steps and the time limit from the run config or KFS_TRAIN_STEPS / "
                      "KFS_TRAIN_SECONDS), device from KFS_TRAIN_DEVICE. Writes the candidate.")
def trained_policy(context: dg.AssetExecutionContext, config: TrainingRunConfig, lake: LakeResource):
    from training.evaluation.report import inline_png
    from training.pipeline import config_from_settings, run_training
    from training.release.publish import published_stage

    def log_progress(iteration, curve):
        if iteration % 10 == 0:
            context.log.info(f"PPO iteration {iteration} ({curve['budget_share']:.0%} of its steps): episode P&L "
                             f"{curve['episode_pnl_cents']:.0f} c, {curve['steps_per_second']:.0f} steps/s")

    the_lake = lake.lake()
    summary = run_training(the_lake, config_from_settings(config.profile, config.seconds, config.steps),
                           progress=log_progress)
    # Read through the lake: on object storage `summary["learning_curves"]` is an s3:// URL, not a local path.
    curves_png = the_lake.read_bytes(the_lake.candidate() / "learning_curves.png")
    stages = summary["stages"]
    return dg.MaterializeResult(metadata={
        "steps": dg.MetadataValue.int(summary["steps"]), "seconds": figure(summary["seconds"], 1),
        "device": summary["device"], "steps_per_second": dg.MetadataValue.int(round(summary["steps_per_second"])),
        "episodes": dg.MetadataValue.int(summary["episodes"]), "train_markets": dg.MetadataValue.int(summary["train_markets"]),
        "forecaster_held_out_r2": pairs_table({k: round(v, 4) for k, v in stages["forecaster"]["held_out"]["r2"].items()},
                                              ("horizon", "string"), ("r2", "float")),
        "forecast_trader": summary["trader"]["rule"],
        "kept": published_stage(summary),
        "cut_short_by_time_limit": dg.MetadataValue.json(stages["cut_short_by_time_limit"]),
        "learning_curves": dg.MetadataValue.md(inline_png(curves_png, "learning curves")),
    })


@dg.asset(group_name=TRAINING_GROUP, deps=[trained_policy], kinds={"pytorch"},
          description="The candidate against the best single-feature rule, the known-answer rules, the forecast "
                      "trader, the imbalance rule, random, always-hold and buy-and-hold YES on validation markets, "
                      "with BCa intervals by market; markdown report with the plots inline.")
def policy_validation(context: dg.AssetExecutionContext, lake: LakeResource):
    from training.release.runs import run_validation

    the_lake = lake.lake()
    result = run_validation(the_lake, "validation")
    report = the_lake.read_bytes(the_lake.candidate() / "validation.md").decode()
    policy_row = next(r for r in result["table"] if r["strategy"] == "policy")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report),
        "report_path": dg.MetadataValue.path(result["report"]),
        "strategies": rows_table(result["table"], STRATEGY_COLUMNS),
        "policy_mean_return_dollars": figure(policy_row["mean_return_dollars"]),
        "policy_ci_low": figure(policy_row["ci_low"]),
        "policy_cross_market_sharpe": figure(policy_row["cross_market_sharpe"]),
        "best_rule": result["best_rule"]["rule"],
        "recovery_of_known_answer": figure(result["recovery"]["ratio"]),
        "recovery_ci_low": figure(result["recovery"]["ci_low"]),
        "recovery_ci_high": figure(result["recovery"]["ci_high"]),
    })


@dg.asset(group_name=TRAINING_GROUP, deps=[policy_validation], kinds={"pytorch"},
          check_specs=[dg.AssetCheckSpec(AGREEMENT_CHECK, asset="published_policy",
                                         description=f"int8 and fp32 pick the same action on >= {MIN_AGREEMENT:.0%} "
                                                     "of validation observations")],
          description="TorchScript dynamic-int8 artifact, manifest and registry entry under `models/<version>/`; "
                      "the production alias moves only through the promotion gate.")
def published_policy(context: dg.AssetExecutionContext, lake: LakeResource):
    from training.release.runs import run_publish

    manifest = run_publish(lake.lake())
    agreement = manifest["int8_fp32_action_agreement"]
    return dg.MaterializeResult(
        metadata={"version": manifest["version"], "promoted": manifest["promotion"]["promoted"],
                  "promotion_reasons": dg.MetadataValue.json(manifest["promotion"]["reasons"]),
                  "gate_comparisons": dg.MetadataValue.md("\n".join(f"- {line}" for line in
                                                                    manifest["promotion"]["comparisons"])),
                  "int8_p50_us": figure(manifest["latency_us"]["int8"]["p50_us"], 1),
                  "int8_p99_us": figure(manifest["latency_us"]["int8"]["p99_us"], 1),
                  "fp32_p99_us": figure(manifest["latency_us"]["fp32"]["p99_us"], 1),
                  "agreement": figure(agreement, 4),
                  "manifest": dg.MetadataValue.json({k: manifest[k] for k in ("version", "feature_schema_hash",
                                                                              "training_partitions", "promotion")})},
        check_results=[dg.AssetCheckResult(check_name=AGREEMENT_CHECK, passed=agreement >= MIN_AGREEMENT,
                                           metadata={"agreement": figure(agreement, 4)})],
    )

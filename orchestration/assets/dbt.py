"""dbt models as Dagster assets; their tests become asset checks.

Three selections, so that the Python split asset can sit between the models it reads
(`market_categories`) and the models that read it (`markets`, `events`) without a cycle:
- daily trade-flow aggregates, partitioned like the raw data (half-open date-window vars);
- the core models (staging, statistics, categories, resolution history);
- the split-dependent marts.
"""

import json

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from kfs.locks import exclusive
from orchestration.dbt_project import dbt_project, ensure_manifest, prepare_dbt_environment
from orchestration.partitions import daily_partitions

MANIFEST = ensure_manifest()
DAILY_SELECT = "int_market_day_trades"
SPLIT_MARTS_SELECT = "stg_splits__registry markets events"
DBT_POOL = "duckdb"  # DuckDB allows one writer per database file


class KfsTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props) -> str:
        return "features"


def _window_vars(context: dg.AssetExecutionContext) -> list[str]:
    window = context.partition_time_window
    return ["--vars", json.dumps({"min_date": window.start.strftime("%Y-%m-%d"),
                                  "max_date": window.end.strftime("%Y-%m-%d")})]


@dbt_assets(manifest=MANIFEST, select=DAILY_SELECT, partitions_def=daily_partitions, project=dbt_project,
            dagster_dbt_translator=KfsTranslator(), pool=DBT_POOL, name="dbt_daily_trade_flow",
            backfill_policy=dg.BackfillPolicy.single_run())
def dbt_daily_trade_flow(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    prepare_dbt_environment()
    with exclusive("warehouse"):
        yield from dbt.cli(["build", *_window_vars(context)], context=context).stream()


@dbt_assets(manifest=MANIFEST, exclude=f"{DAILY_SELECT} {SPLIT_MARTS_SELECT}", project=dbt_project,
            dagster_dbt_translator=KfsTranslator(), pool=DBT_POOL, name="dbt_core_models")
def dbt_core_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    prepare_dbt_environment()
    with exclusive("warehouse"):
        yield from dbt.cli(["build"], context=context).stream()


@dbt_assets(manifest=MANIFEST, select=SPLIT_MARTS_SELECT, project=dbt_project,
            dagster_dbt_translator=KfsTranslator(), pool=DBT_POOL, name="dbt_split_marts")
def dbt_split_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    prepare_dbt_environment()
    with exclusive("warehouse"):
        yield from dbt.cli(["build"], context=context).stream()


def dbt_resource() -> DbtCliResource:
    from orchestration.dbt_project import DBT_EXECUTABLE

    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)

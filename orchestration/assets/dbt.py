"""dbt models as Dagster assets; their tests become asset checks.

Two selections, because the Python split sits between the model it reads and the models that read it:
- `dbt_models`: staging, intermediate and the hand-off `market_categories` (the split reads it);
- `dbt_split_marts`: the split registry's staging view and the marts that join it (`markets`, `events`).
The dataset path is features (Python) -> dbt_models -> split_registry (Python) -> dbt_split_marts.
"""

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from core.catalog import Lake
from core.locks import exclusive
from core.settings import settings
from orchestration.dbt_child import watched_dbt_executable
from orchestration.dbt_project import (
    DBT_EXECUTABLE,
    dbt_project,
    ensure_manifest,
    prepare_dbt_environment,
)

MANIFEST = ensure_manifest()
SPLIT_MARTS_SELECT = "stg_splits__registry markets events"
DBT_POOL = "duckdb"  # DuckDB allows one writer per database file


class KfsTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props) -> str:
        return "features"


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, rebuilt_whole: tuple[str, ...] = ()):
    prepare_dbt_environment()
    with exclusive("warehouse"):
        for dataset in rebuilt_whole:
            Lake(settings().lake).remove_dataset(dataset)
        yield from dbt.cli(["build"], context=context).stream()


@dbt_assets(manifest=MANIFEST, exclude=SPLIT_MARTS_SELECT, project=dbt_project,
            dagster_dbt_translator=KfsTranslator(), pool=DBT_POOL, name="dbt_models")
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    # int_market_day_trades is rebuilt whole as Hive partitions; DuckDB's partitioned COPY only adds and
    # replaces files, so partitions of an earlier build (a day since quarantined) would stay behind.
    yield from _build(context, dbt, rebuilt_whole=("int_market_day_trades",))


@dbt_assets(manifest=MANIFEST, select=SPLIT_MARTS_SELECT, project=dbt_project,
            dagster_dbt_translator=KfsTranslator(), pool=DBT_POOL, name="dbt_split_marts")
def dbt_split_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from _build(context, dbt)


def dbt_resource() -> DbtCliResource:
    """dbt through a wrapper that stops it when the run's process dies (orchestration/dbt_child.py)."""
    return DbtCliResource(project_dir=dbt_project,
                          dbt_executable=watched_dbt_executable(settings().home, DBT_EXECUTABLE))

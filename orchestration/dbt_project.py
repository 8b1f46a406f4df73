"""The one place that knows the dbt project: paths, environment, manifest."""

import os
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from kfs.config import kfs_home, lake_root

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
# External models write under the lake; these folders must exist before dbt's COPY runs.
_EXTERNAL_DIRS = ("features/market_categories", "features/markets", "features/int_market_day_trades")


def prepare_dbt_environment() -> dict[str, str]:
    """Absolute paths for profiles.yml (KFS_LAKE, KFS_WAREHOUSE) and the folders dbt writes into."""
    lake = lake_root()
    warehouse = Path(os.environ.get("KFS_WAREHOUSE", str(kfs_home() / "warehouse.duckdb"))).absolute()
    for folder in _EXTERNAL_DIRS:
        (lake / folder).mkdir(parents=True, exist_ok=True)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    os.environ["KFS_LAKE"] = str(lake)
    os.environ["KFS_WAREHOUSE"] = str(warehouse)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return {"KFS_LAKE": str(lake), "KFS_WAREHOUSE": str(warehouse)}


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)


def ensure_manifest() -> Path:
    """`dbt parse` once if the manifest is missing (a fresh clone); `make` rebuilds it when models change.
    Under `dagster dev` / `dg`, dagster-dbt re-parses on load; profiles.yml needs the paths first."""
    prepare_dbt_environment()
    dbt_project.prepare_if_dev()
    if not dbt_project.manifest_path.exists():
        subprocess.run([DBT_EXECUTABLE, "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
                        "--profiles-dir", str(DBT_PROJECT_DIR)], check=True, env={**os.environ})
    return dbt_project.manifest_path

"""The one place that knows the dbt project: paths, environment, manifest."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtProject
from dagster_dbt.dbt_project import using_dagster_dev

from core.catalog import Lake
from core.settings import settings
from orchestration.dbt_contract import DBT_PROJECT_DIR

DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")


def prepare_dbt_environment() -> dict[str, str]:
    """What dbt reads from its environment (profiles.yml and the contract macros): the lake root and the
    warehouse as absolute paths from the settings; and the folders dbt's external models write into."""
    current = settings()
    for folder in Lake(current.lake).dbt_output_folders():
        folder.mkdir(parents=True, exist_ok=True)
    current.warehouse.parent.mkdir(parents=True, exist_ok=True)
    environment = {"KFS_LAKE": current.lake, "KFS_WAREHOUSE": str(current.warehouse), "DO_NOT_TRACK": "1"}
    os.environ.update(environment)  # dbt runs as a child process and inherits these
    return environment


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)


# What `dbt parse` leaves that other processes read: dagster-dbt loads the manifest when the definitions
# load, and copies the partial-parse cache into each run's own target folder.
_PARSE_ARTIFACTS = ("manifest.json", "partial_parse.msgpack")


def parse_manifest(target_dir: Path | None = None) -> Path:
    """`dbt parse` into a private folder, then move its artifacts into `target_dir` one rename each.

    `dbt parse` writes in place, so a `kfs materialize` that loads the definitions while `dagster dev`
    re-parses would read half a manifest; after a rename a reader sees the old file or the new one."""
    target_dir = target_dir or dbt_project.manifest_path.parent
    target_dir.mkdir(parents=True, exist_ok=True)
    prepare_dbt_environment()
    scratch = Path(tempfile.mkdtemp(prefix=".parse-", dir=target_dir))
    try:
        subprocess.run([DBT_EXECUTABLE, "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
                        "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(scratch)],
                       check=True)
        for name in _PARSE_ARTIFACTS:
            if (scratch / name).exists():
                os.replace(scratch / name, target_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target_dir / "manifest.json"


def ensure_manifest() -> Path:
    """The manifest the dbt assets are built from: re-parsed under `dagster dev` (to pick up model edits,
    as dagster-dbt's `prepare_if_dev` would, but atomically), parsed once if missing (a fresh clone);
    `make` rebuilds it when models change."""
    prepare_dbt_environment()  # profiles.yml reads the paths, when the dbt assets run as well
    if using_dagster_dev() or not dbt_project.manifest_path.exists():
        parse_manifest()
    return dbt_project.manifest_path


if __name__ == "__main__":
    print(parse_manifest())

"""The dbt project: manifest parsing is atomic; the contract rendered from Python is current."""

from __future__ import annotations


def test_a_manifest_reparse_never_shows_readers_half_a_manifest(tmp_path, monkeypatch):
    """`dagster dev` re-parses the dbt project while other processes (a `kfs materialize`) load the
    definitions; in-place `dbt parse` writes let about one read in ten see a truncated manifest."""
    import threading

    import orjson

    from orchestration.dbt_project import parse_manifest

    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("KFS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    target = tmp_path / "target"
    manifest = parse_manifest(target)
    reparsed = threading.Event()

    def reparse_twice():
        try:
            parse_manifest(target)
            parse_manifest(target)
        finally:
            reparsed.set()

    reparser = threading.Thread(target=reparse_twice)
    reparser.start()
    reads = 0
    while not reparsed.is_set():
        assert orjson.loads(manifest.read_bytes())["metadata"]["project_name"] == "kfs"
        reads += 1
    reparser.join()
    assert reads > 100
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "partial_parse.msgpack"]


def test_the_dbt_contract_is_rendered_from_the_python_owners():
    """Categories, thresholds, split shares, locations and raw columns reach dbt only through this rendering."""
    from orchestration.dbt_contract import rendered

    for path, text in rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run `make docs`"


def test_the_dbt_wrapper_reports_the_installed_version_without_starting_dbt(tmp_path):
    """dagster-dbt runs `<executable> --version` once per step and parses the first x.y.z; the wrapper answers
    from the installed packages (dbt itself would import its CLI and ask PyPI)."""
    import re
    import subprocess

    from dbt.version import __version__ as installed

    from orchestration.dbt_child import watched_dbt_executable
    from orchestration.dbt_project import DBT_EXECUTABLE

    wrapper = watched_dbt_executable(tmp_path, DBT_EXECUTABLE)
    answer = subprocess.run([wrapper, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert re.search(r"(\d+\.\d+\.\d+)", answer.stdout).group(1) == installed

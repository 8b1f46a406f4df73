"""The object-storage lake's edges against a real S3 server (SeaweedFS): every misconfiguration is one line
without a secret; the dev server's command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMALL_START


def kfs(*args: str, env: dict, home) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfs.cli", *args], env={**os.environ, "KFS_HOME": str(home), **env},
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret", "nothing listening"])
def test_a_misconfigured_s3_lake_is_one_line_without_the_secret(case, small_env, object_store, s3_lake, tmp_path):
    env = {"KFS_LAKE": s3_lake}
    if case == "missing bucket":
        env["KFS_LAKE"] = "s3://no-such-bucket/lake"
    elif case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-" + "x" * 20
    else:
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    done = kfs("materialize", "--start", SMALL_START.isoformat(), env=env, home=tmp_path)
    assert done.returncode == 2
    line = one_line(done)
    expected = {"missing bucket": "bucket 'no-such-bucket' does not exist", "wrong secret": "denied",
                "nothing listening": "object storage unreachable at AWS_ENDPOINT_URL=http://127.0.0.1:9"}[case]
    assert expected in line, line
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr and "not-the-secret" not in line


def test_objectstore_commands_start_serve_and_stop_a_server(tmp_path):
    home = tmp_path / "home"
    assert kfs("objectstore", "url", env={}, home=home).returncode == 2
    started = kfs("objectstore", "start", "--bucket", "demo", env={}, home=home)
    try:
        assert started.returncode == 0, started.stderr
        url = kfs("objectstore", "url", env={}, home=home).stdout.strip()
        assert url.startswith("http://127.0.0.1:")
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in kfs("objectstore", "env", "--bucket", "demo", env={}, home=home).stdout.splitlines())
        assert exports["AWS_ENDPOINT_URL"] == url and exports["KFS_LAKE"] == "s3://demo/lake"
        assert (home / "objectstore" / "s3_identities.json").stat().st_mode & 0o077 == 0
        from core.catalog import Lake
        from core.settings import environment_overrides

        with environment_overrides(**{k: v for k, v in exports.items() if k.startswith("AWS_")}):
            Lake(exports["KFS_LAKE"]).check_reachable()  # the bucket exists and the keys work
    finally:
        assert kfs("objectstore", "stop", env={}, home=home).stdout.strip() == "stopped"
    assert kfs("objectstore", "stop", env={}, home=home).stdout.strip() == "not running"

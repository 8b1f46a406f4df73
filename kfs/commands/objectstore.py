"""`kfs objectstore start|stop|url|env`: a local S3 server (SeaweedFS) for an s3:// lake."""

from __future__ import annotations

import argparse

from core.object_store import ObjectStoreError, default_server
from kfs.console import UsageError, console


def run(args: argparse.Namespace) -> int:
    """A local S3 server (SeaweedFS) for an s3:// lake; `env` prints the variables that point kfs at it."""
    server = default_server()
    try:
        if args.action == "start":
            url = server.start()
            server.create_bucket(args.bucket)
            console.print(f"SeaweedFS S3 running at {url} with bucket {args.bucket!r}; "
                          f"`eval \"$(kfs objectstore env)\"` points kfs at s3://{args.bucket}/lake")
        elif args.action == "stop":
            console.print("stopped" if server.stop() else "not running")
        elif args.action == "url":
            print(server.url())
        elif args.action == "env":
            for key, value in {**server.environment(), "KFS_LAKE": f"s3://{args.bucket}/lake"}.items():
                print(f"export {key}={value}")
    except ObjectStoreError as error:
        raise UsageError(str(error)) from None
    return 0

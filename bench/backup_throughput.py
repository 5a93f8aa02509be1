"""Backup throughput: a snapshot-sized file copied into a store, encrypted, and read back.

    python bench/backup_throughput.py [--size-mb 256] [--repeat 3] [--no-docs]

What the backup workflow does after the provider's snapshot, measured alone: the
archive streamed through AES-256-GCM (1 MiB chunks) into the store with its SHA-256
(`orchestrator.backup_copy.copy_file`), then read back and hashed as a verification
does (`backups.store.read_back`). Stores: the built-in directory store, and an S3
bucket on moto_server (loopback, in-memory). Beside each, what a plain copy costs: `cp`
of the file for the directory, boto3's `upload_file` (no encryption) for S3. The file
is random (incompressible, as a gzip archive is). Results go to docs/benchmarks.md
between the backup markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from docsection import markers, write_section

from provisor.backups.crypto import new_data_key
from provisor.backups.local_store import DirectoryStore
from provisor.backups.s3_store import S3Settings, S3Store
from provisor.backups.store import BackupStore, read_back
from provisor.orchestrator.backup_copy import copy_file
from provisor.testing.moto import MotoServer

BEGIN, END = markers("backup")
BUCKET = "bench-backups"
MIB = 1024 * 1024


def make_file(path: Path, size_mb: int) -> None:
    with path.open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(MIB))


def provisor_case(store: BackupStore, source: Path) -> Callable[[], tuple[float, float]]:
    key = new_data_key()

    def run() -> tuple[float, float]:
        started = time.monotonic()
        copied = copy_file(store, "bench/m/b/disk.tar.gz", key, source)
        wrote = time.monotonic() - started
        started = time.monotonic()
        assert read_back(store, "bench/m/b/disk.tar.gz") == copied.stored
        return wrote, time.monotonic() - started

    return run


def cp_case(directory: Path, source: Path) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        started = time.monotonic()
        shutil.copyfile(source, directory / "copy")
        os.sync()
        return time.monotonic() - started, 0.0

    return run


def boto3_case(client: object, source: Path) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        started = time.monotonic()
        client.upload_file(str(source), BUCKET, "plain/disk.tar.gz")  # type: ignore[attr-defined]
        return time.monotonic() - started, 0.0

    return run


def report(results: dict[str, list[tuple[float, float]]], size_mb: int, repeat: int) -> str:
    rows = []
    for case, runs in results.items():
        write = statistics.median(w for w, _ in runs)
        verify = statistics.median(v for _, v in runs)
        verified = f"{size_mb / verify:.0f}" if verify else "-"
        rows.append(f"| {case} | {size_mb / write:.0f} | {verified} |")
    return "\n".join(
        [
            BEGIN,
            f"## Backup throughput: a {size_mb} MiB snapshot into a store",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"median of {repeat} run(s) (bench/backup_throughput.py). MB/s of the snapshot "
            "archive: written (encrypted, hashed, stored) and verified (read back and "
            "hashed). S3 is moto_server on 127.0.0.1 (in memory): it measures provisor's "
            "side and the HTTP path, not a real bucket's network. The snapshot itself (tar + "
            "gzip of the machine's disk) comes before and is not in these numbers.",
            "",
            "| how | write MB/s | verify MB/s |",
            "| --- | ---: | ---: |",
            *rows,
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="provisor-bench-backup-"))
    try:
        source = scratch / "snapshot.tar.gz"
        make_file(source, args.size_mb)
        with MotoServer(scratch / "moto.log") as server:
            client = boto3.client(
                "s3",
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # moto's fake credentials
            )
            client.create_bucket(Bucket=BUCKET)
            settings = {"bucket": BUCKET, "endpoint": server.url, "access_key_id": "testing"}
            s3 = S3Store("bench", S3Settings.parse(settings), "testing")
            cases = {
                "provisor, directory store": provisor_case(
                    DirectoryStore("local", scratch / "store"), source
                ),
                "cp (no encryption, no verify)": cp_case(scratch, source),
                "provisor, S3 store": provisor_case(s3, source),
                "boto3 upload_file (no encryption, no verify)": boto3_case(client, source),
            }
            results: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
            for _ in range(args.repeat):
                for case, run in cases.items():  # interleaved: noise hits every case alike
                    result = run()
                    print(case, result, flush=True)
                    results[case].append(result)
            s3.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    section = report(results, args.size_mb, args.repeat)
    print(section)
    if not args.no_docs:
        write_section("backup", section)


if __name__ == "__main__":
    main()

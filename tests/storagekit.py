"""Helpers of the storage tests: a task with output files, stored through the server's own
`Outputs` (the kinds with output files are tested end to end elsewhere), a real S3 API (moto in
server mode, in its own process) and file makers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import components
from server.outputs import validate_task_store
from server.statuses import Status, Task, new_key, now_iso
from tasks.declare import Kind, Output
from tests.conftest import Api, free_port

# A kind of this test module only (not registered): the server stores its files like any other.
OUTPUT_KIND = Kind(
    name="test.output",
    help="Writes output files (tests only).",
    params=(),
    outputs=(),
    run=lambda job: None,
    output_files=(Output("output", "file", "The output file."),),
)
TWO_OUTPUTS_KIND = Kind(
    name="test.outputs",
    help="Writes two output files (tests only).",
    params=(),
    outputs=(),
    run=lambda job: None,
    output_files=(Output("output", "file"), Output("thumbnail", "file")),
)


def write_file(path: Path, size: int, seed: int = 1) -> bytes:
    """Writes `size` bytes that differ per seed, a megabyte at a time; returns the first MB."""
    block = (seed.to_bytes(4, "big") + os.urandom(1020)) * 1024
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return block


def new_task(api: Api, task_store: Any = None, account_id: int = 1) -> Task:
    """A task as the create handler builds it, with its task_store checked and sealed."""
    store, errors = validate_task_store(task_store, api.client.app[components.SEALER])
    assert not errors, errors
    return Task(
        key=new_key(),
        account_id=account_id,
        task_name=OUTPUT_KIND.name,
        params={},
        task_store=store,
        task_metas=None,
        status=Status.EXECUTING,
        queued_at=now_iso(),
    )


async def store_outputs(
    api: Api, task: Task, files: dict[str, bytes], workdir: Path, kind: Kind = OUTPUT_KIND
) -> dict[str, Any]:
    """Writes `files` (output name to content) in a work folder and stores them as the runner
    does once a task has run; returns the result with the URLs."""
    result: dict[str, Any] = {"width": 10}

    def write() -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (workdir / f"{name}.bin").write_bytes(data)
            result[name] = f"{name}.bin"

    await asyncio.to_thread(write)
    outputs = api.client.app[components.RUNNER].outputs
    return await outputs.store(task, kind, result, workdir)


@dataclass
class Moto:
    """A moto S3 server on loopback."""

    endpoint: str
    region: str = "us-east-1"
    access_key_id: str = "AKIASERVEREXAMPLE000"
    secret_access_key: str = "server-secret-example-0000000000000000000"

    def client_args(self) -> dict[str, Any]:
        return {
            "region_name": self.region,
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


def run_moto() -> Iterator[Moto]:
    """Starts `moto.server` in its own process (so its copy of uploaded objects does not count in
    the memory measured here) and stops it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()

    def drain() -> None:
        # Werkzeug logs every request to stderr: keep reading so the pipe never fills.
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(30) and proc.poll() is None, "moto.server did not start"
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)

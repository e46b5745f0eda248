"""The worker process: receives jobs over a socket, runs the kind, sends back progress and the
outcome. It never touches the database or the network.

The fork server imports this module before forking workers, so each worker starts with every
kind already loaded.
"""

from __future__ import annotations

import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from tasks import registry
from tasks.declare import Job, TaskError

KINDS = registry()
HEADER = struct.Struct("!I")
# Progress is sent when it moves and at most this often, unless it carries a partial result.
PROGRESS_EVERY = 0.1


def encode(message: Any) -> bytes:
    """Frames one message: a 4-byte length, then the pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def _receive(reader: BinaryIO) -> Any:
    """The next message, or None once the server has closed the socket."""
    header = reader.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    size = HEADER.unpack(header)[0]
    body = reader.read(size)
    return None if len(body) < size else pickle.loads(body)


class _Reporter:
    """The `progress(pct, partial=None)` callback given to a run function."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.last_sent = 0.0
        self.last_pct: Any = None

    def __call__(self, pct: Any, partial: dict[str, Any] | None = None) -> None:
        if isinstance(pct, float):
            pct = round(pct, 1)
        now = time.monotonic()
        if partial is None and (pct == self.last_pct or now - self.last_sent < PROGRESS_EVERY):
            return
        self.last_sent, self.last_pct = now, pct
        self.sock.sendall(encode(("progress", pct, partial)))


def run_job(
    name: str, params: dict[str, Any], inputs: dict[str, Any], workdir: str, progress: Any
) -> tuple[str, Any]:
    """Runs one job and sorts the outcome: ("done", result) or ("failed", message)."""
    kind = KINDS[name]
    job = Job(params=params, inputs=inputs, workdir=Path(workdir), progress=progress)
    try:
        return "done", kind.run(job)
    except TaskError as e:
        return "failed", str(e)
    except MemoryError:
        return "failed", "the task ran out of memory"
    except Exception as e:  # a bug or an unexpected decoder failure: report it, stay alive
        traceback.print_exc(file=sys.stderr)
        return "failed", f"internal error while running {name}: {type(e).__name__}: {e}"


def main(sock: socket.socket) -> None:
    """The worker's loop until the server closes the socket: each message is a list of jobs,
    run in order, each answered with (outcome, value, seconds it ran) as soon as it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    reporter = _Reporter(sock)
    reader = sock.makefile("rb")
    while (jobs := _receive(reader)) is not None:
        for name, params, inputs, workdir in jobs:
            reporter.last_pct = None
            start = time.perf_counter()
            outcome = run_job(name, params, inputs, workdir, reporter)
            sock.sendall(encode((*outcome, time.perf_counter() - start)))

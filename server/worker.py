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
from typing import Any

from tasks import registry
from tasks.declare import Job, TaskError

KINDS = registry()
_HEADER = struct.Struct("!I")
# Progress is sent when it moves and at most this often, unless it carries a partial result.
PROGRESS_EVERY = 0.1


def encode(message: Any) -> bytes:
    """Frames one message: a 4-byte length, then the pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _receive(sock: socket.socket) -> Any:
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    body = _recv_exact(sock, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


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
    """The worker's loop: one job at a time until the server closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    reporter = _Reporter(sock)
    while True:
        message = _receive(sock)
        if message is None:
            return
        _, name, params, inputs, workdir = message
        reporter.last_pct = None
        sock.sendall(encode(run_job(name, params, inputs, workdir, reporter)))

"""Task kinds that exist only in the tests (added with TASKSTREAM_EXTRA_KINDS): tasks that take
time, burn CPU, crash their worker, fail, publish a partial result, or answer at once, on
demand."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tasks.declare import BOOLEAN, FLOAT, STRING, Job, Kind, Output, Param, TaskError


def _sleep(job: Job) -> str:
    seconds, steps = job.params["seconds"], 10
    for i in range(steps):
        job.progress(i * 100 // steps)
        time.sleep(seconds / steps)
    return "slept"


def _spin(job: Job) -> int:
    end, n = time.monotonic() + job.params["seconds"], 0
    while time.monotonic() < end:
        n += sum(range(1000))
    return n


def _crash_once(job: Job) -> str:
    """Kills its own worker the first time (marked by a file), succeeds the next time."""
    marker = Path(job.params["marker"])
    if not marker.exists():
        marker.write_text("crashed")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def _crash(job: Job) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def _fail(job: Job) -> str:
    raise TaskError(job.params["message"])


def _partial(job: Job) -> dict[str, float]:
    """Publishes a partial result, then waits until the file `release` exists."""
    job.progress(50, partial={"duration": 12.5})
    release = Path(job.params["release"])
    while not release.exists():
        time.sleep(0.01)
    return {"duration": 12.5, "frames": 3.0}


def _quick(job: Job) -> str:
    """Answers at once, unless told to crash its worker or to hang."""
    if job.params["crash"]:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(job.params["hang"])
    return job.params["name"]


def _kind(name: str, run, *params: Param, time_limit: float = 30.0) -> Kind:
    return Kind(
        name=name,
        help=f"A test kind ({name}).",
        params=params,
        outputs=(Output("result", "any"),),
        run=run,
        time_limit=time_limit,
    )


KINDS = [
    _kind("test.sleep", _sleep, Param("seconds", FLOAT, default=0.5, max=20)),
    _kind("test.spin", _spin, Param("seconds", FLOAT, default=1.0)),
    _kind("test.crash_once", _crash_once, Param("marker", STRING, required=True)),
    _kind("test.crash", _crash),
    _kind("test.fail", _fail, Param("message", STRING, default="it failed")),
    _kind("test.partial", _partial, Param("release", STRING, required=True)),
    _kind("test.slow", _sleep, Param("seconds", FLOAT, default=5.0), time_limit=0.5),
    _kind(
        "test.quick",
        _quick,
        Param("name", STRING, default="quick"),
        Param("crash", BOOLEAN, default=False),
        Param("hang", FLOAT, default=0.0),
        time_limit=0.5,
    ),
]

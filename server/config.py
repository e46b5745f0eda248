"""The server's settings: one frozen dataclass, built once from the command line and passed down.

Every field is a documented setting (README, "Configuration" and "Security and limits"); the
command line is generated from `SETTINGS` below so the two cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class Config:
    """Server settings; every field has a command-line flag of the same name."""

    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on."})
    port: int = field(default=8080, metadata={"help": "Port to listen on."})
    data_dir: Path = field(
        default=Path("data"),
        metadata={"help": "Folder for the task store (SQLite) and the local output files."},
    )
    workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "Worker processes that run tasks (default: the CPU count)."},
    )
    secret: str | None = field(
        default=None,
        metadata={"help": "Make sure an account with this secret exists."},
    )
    allow_private_networks: bool = field(
        default=False,
        metadata={
            "help": "Let input, callback and storage URLs reach loopback and private addresses "
            "(local development and tests)."
        },
    )
    public_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL clients use to reach this server, for output file URLs "
            "(default: http://HOST:PORT)."
        },
    )
    concurrency: int = field(
        default=64,
        metadata={
            "help": "Tasks handled at once (downloading inputs, waiting for a worker, "
            "storing outputs)."
        },
    )
    max_queued: int = field(
        default=100_000,
        metadata={"help": "Tasks waiting to run before creates get 503 with Retry-After."},
    )
    max_batch: int = field(
        default=1000, metadata={"help": "Most tasks in one create, and keys in one status query."}
    )
    max_body_bytes: int = field(
        default=4 * 1024 * 1024, metadata={"help": "Largest request body accepted (413 above)."}
    )
    rate_limit: float = field(
        default=1000.0,
        metadata={
            "help": "Tasks an account may create per second, sustained (429 with Retry-After "
            "above; 0 turns the limit off)."
        },
    )
    rate_burst: int = field(
        default=20_000,
        metadata={"help": "Tasks an account may create at once before the rate limit applies."},
    )
    max_streams: int = field(
        default=5000,
        metadata={"help": "Open status streams per account (429 above)."},
    )
    max_attempts: int = field(
        default=3,
        metadata={
            "help": "Runs of a task interrupted by a crash or restart before it ends in error."
        },
    )
    fetch_connect_timeout: float = field(
        default=10.0, metadata={"help": "Seconds to connect when downloading an input."}
    )
    fetch_timeout: float = field(
        default=300.0, metadata={"help": "Seconds a whole input download may take."}
    )
    fetch_max_bytes: int = field(
        default=2 * 1024**3, metadata={"help": "Largest input file downloaded, in bytes."}
    )
    fetch_max_redirects: int = field(
        default=5, metadata={"help": "Redirects followed when downloading an input."}
    )
    callback_timeout: float = field(
        default=10.0, metadata={"help": "Seconds one callback POST may take."}
    )
    callback_retry_scale: float = field(
        default=1.0,
        metadata={
            "help": "Multiplies the callback retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, "
            "10 h); tests shrink it."
        },
    )
    stream_keepalive: float = field(
        default=15.0, metadata={"help": "Seconds of silence before a stream sends a blank line."}
    )
    access_log: bool = field(
        default=False, metadata={"help": "Log every HTTP request (off: it costs throughput)."}
    )
    s3_bucket: str | None = field(
        default=None,
        metadata={
            "help": "S3 bucket for persistent and volatile output files (default: local disk "
            "under --data-dir, served by this server)."
        },
    )
    s3_endpoint_url: str | None = field(
        default=None,
        metadata={"help": "Endpoint of an S3-compatible service (default: Amazon S3)."},
    )
    s3_region: str | None = field(
        default=None, metadata={"help": "Region of the bucket (default: botocore's choice)."}
    )
    s3_prefix: str | None = field(
        default=None,
        metadata={"help": "Key prefix (a folder) for every output file in the bucket."},
    )
    s3_public_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL at which the bucket's keys are publicly readable (a public bucket "
            "or a CDN); without it, output URLs are presigned GET URLs."
        },
    )
    s3_presign_expires: int = field(
        default=7 * 24 * 3600,
        metadata={"help": "Seconds a presigned output URL stays valid (at most 7 days)."},
    )
    s3_access_key_id: str | None = field(
        default=None,
        metadata={
            "help": "Access key for the bucket (default: the AWS_ACCESS_KEY_ID environment "
            "variable, shared config or instance role, as botocore finds them)."
        },
    )
    s3_secret_access_key: str | None = field(
        default=None,
        metadata={
            "help": "Secret key for the bucket (default: AWS_SECRET_ACCESS_KEY, as botocore "
            "finds it; prefer the environment, flags show in the process list)."
        },
    )
    s3_part_size: int = field(
        default=8 * 1024 * 1024,
        metadata={
            "help": "Bytes per part of a multipart upload to S3; larger files are sent in "
            "parts, one in memory at a time (at least 5 MiB)."
        },
    )
    upload_timeout: float = field(
        default=900.0,
        metadata={
            "help": "Seconds one request of an output upload to S3 or to an s3_signed URL may take."
        },
    )
    storage_sweep_interval: float = field(
        default=3600.0,
        metadata={
            "help": "Seconds between sweeps deleting expired persistent files and volatile "
            "files older than 7 days."
        },
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "taskstream.sqlite3"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def key_path(self) -> Path:
        """The key that encrypts task credentials at rest (created on first start)."""
        return self.data_dir / "storage.key"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def settings() -> list[tuple[str, type, object, str]]:
    """(name, type, default, help) of every setting, for the CLI and the docs."""
    out = []
    defaults = Config()
    for f in fields(Config):
        kind = {"int": int, "float": float, "bool": bool, "Path": Path}.get(str(f.type), str)
        out.append((f.name, kind, getattr(defaults, f.name), f.metadata["help"]))
    return out

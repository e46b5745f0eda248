"""S3 for real, served on loopback by moto in server mode: the S3 backend (single and multipart
uploads, presigned and public URLs, listing, deletion), the server's persistent and volatile
systems in a bucket, and the `s3` and `s3_signed` task stores, whose credentials are never shown
or stored in plain text."""

from __future__ import annotations

import io
import logging
import secrets
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from PIL import Image

from server import components
from server.outputs import OutputError
from server.storage import DAY
from storage_backends import StorageError
from storage_backends.s3 import S3Settings
from storage_backends.s3 import Storage as S3Storage
from tests.conftest import AUTH, SECRET, Api, assert_status
from tests.mediagen import make_image
from tests.storagekit import (
    TWO_OUTPUTS_KIND,
    Moto,
    free_port,
    new_task,
    run_moto,
    store_outputs,
    write_file,
)

MiB = 1024 * 1024
TASK_KEY_ID = "AKIATASKEXAMPLE12345"
TASK_SECRET = "task-secret-Zx9+never/shown/anywhere000"


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    yield from run_moto()


@pytest.fixture
async def s3(moto: Moto) -> AsyncIterator[Any]:
    config = AioConfig(signature_version="s3v4", s3={"addressing_style": "path"})
    async with get_session().create_client("s3", **moto.client_args(), config=config) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"bucket-{secrets.token_hex(6)}"
    await s3.create_bucket(Bucket=name)
    return name


async def keys_in(s3: Any, bucket: str) -> dict[str, int]:
    listed = await s3.list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["Size"] for item in listed.get("Contents", [])}


async def read_object(s3: Any, bucket: str, key: str) -> bytes:
    got = await s3.get_object(Bucket=bucket, Key=key)
    async with got["Body"] as body:
        return await body.read()


def backend(moto: Moto, bucket: str, **overrides: Any) -> S3Storage:
    values: dict[str, Any] = {
        "bucket": bucket,
        "prefix": "pre/",
        "region": moto.region,
        "endpoint_url": moto.endpoint,
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        "part_size": 5 * MiB,
    }
    values.update(overrides)
    return S3Storage(S3Settings(**values))


def s3_store(moto: Moto, bucket: str, **overrides: Any) -> dict[str, Any]:
    """An `s3` task_store naming a bucket of the moto server, with the task's own keys."""
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": "renders",
        "region": moto.region,
        "endpoint_url": moto.endpoint,
        "access_key_id": TASK_KEY_ID,
        "secret_access_key": TASK_SECRET,
        **overrides,
    }


# -- the backend --------------------------------------------------------------------------------


async def test_backend_put_url_list_delete(
    moto: Moto, s3: Any, bucket: str, tmp_path: Path
) -> None:
    storage = backend(moto, bucket)
    try:
        (tmp_path / "small.jpg").write_bytes(b"small file")
        head = write_file(tmp_path / "big.bin", 12 * MiB)
        await storage.put("persistent/1/K/small.jpg", tmp_path / "small.jpg", "image/jpeg")
        await storage.put("persistent/1/K/big.bin", tmp_path / "big.bin", "video/mp4")

        assert await keys_in(s3, bucket) == {
            "pre/persistent/1/K/small.jpg": 10,
            "pre/persistent/1/K/big.bin": 12 * MiB,
        }
        small = await s3.head_object(Bucket=bucket, Key="pre/persistent/1/K/small.jpg")
        assert small["ContentType"] == "image/jpeg"
        big = await s3.head_object(Bucket=bucket, Key="pre/persistent/1/K/big.bin")
        assert big["ETag"].endswith('-3"')  # three parts of 5, 5 and 2 MiB
        assert big["ContentType"] == "video/mp4"
        data = await read_object(s3, bucket, "pre/persistent/1/K/big.bin")
        assert data[: len(head)] == head and len(data) == 12 * MiB

        url = await storage.url("persistent/1/K/small.jpg")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=604800" in url
        async with _session() as session, session.get(url) as resp:
            assert resp.status == 200 and await resp.read() == b"small file"

        listed = {f.path: f.size for f in await storage.list("persistent/1/")}
        assert listed == {"persistent/1/K/small.jpg": 10, "persistent/1/K/big.bin": 12 * MiB}
        assert await storage.list("volatile/") == []

        assert storage.s3_uri("a/b.jpg") == f"s3://{bucket}/pre/a/b.jpg"
        assert storage.object_url("a/b.jpg") == f"{moto.endpoint}/{bucket}/pre/a/b.jpg"

        await storage.delete("persistent/1/K/small.jpg")
        await storage.delete("persistent/1/K/small.jpg")  # missing: not an error
        assert list(await keys_in(s3, bucket)) == ["pre/persistent/1/K/big.bin"]
        await storage.delete_many(["persistent/1/K/big.bin", "persistent/1/K/none"])
        assert await keys_in(s3, bucket) == {}
    finally:
        await storage.close()


async def test_backend_urls_without_endpoint(moto: Moto, bucket: str) -> None:
    public = backend(moto, bucket, public_url="https://cdn.example/files/")
    assert await public.url("persistent/1/K/a b.jpg") == (
        "https://cdn.example/files/pre/persistent/1/K/a%20b.jpg"
    )
    aws = backend(moto, "my-bucket", endpoint_url=None, region="eu-west-3", prefix="")
    assert aws.object_url("K/x.mp4") == "https://my-bucket.s3.eu-west-3.amazonaws.com/K/x.mp4"
    dotted = backend(moto, "my.bucket", endpoint_url=None, region="eu-west-3", prefix="")
    assert dotted.object_url("K/x.mp4") == "https://s3.eu-west-3.amazonaws.com/my.bucket/K/x.mp4"


async def test_backend_errors_are_storage_errors(moto: Moto, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"x")
    missing = backend(moto, "no-such-bucket-here")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        await missing.put("a/f.txt", tmp_path / "f.txt", "text/plain")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        await missing.list("")
    await missing.close()
    closed = backend(
        moto, "any-bucket", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1
    )
    with pytest.raises(StorageError, match="any-bucket failed"):
        await closed.put("a/f.txt", tmp_path / "f.txt", "text/plain")
    await closed.close()


async def test_100_mb_upload_with_flat_memory(
    moto: Moto, s3: Any, bucket: str, tmp_path: Path
) -> None:
    size = 100 * MiB
    part = 8 * MiB
    head = write_file(tmp_path / "big.mp4", size, seed=7)
    storage = backend(moto, bucket, part_size=part)
    try:
        tracemalloc.start()
        try:
            await storage.put("persistent/1/K/big.mp4", tmp_path / "big.mp4", "video/mp4")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await storage.close()
    print(f"100 MiB multipart upload: peak traced memory {peak / MiB:.1f} MiB")
    # About one part in memory at a time (plus botocore's copies of it), never the file.
    assert peak < 5 * part < size / 2, peak
    head_object = await s3.head_object(Bucket=bucket, Key="pre/persistent/1/K/big.mp4")
    assert head_object["ContentLength"] == size
    assert head_object["ETag"].endswith('-13"')
    tail = await s3.get_object(Bucket=bucket, Key="pre/persistent/1/K/big.mp4", Range="bytes=0-99")
    async with tail["Body"] as body:
        assert await body.read() == head[:100]


# -- the server's persistent and volatile systems in a bucket -----------------------------------


@pytest.fixture
async def s3_api(make_api: Any, moto: Moto, bucket: str) -> Api:
    return await make_api(
        s3_bucket=bucket,
        s3_endpoint_url=moto.endpoint,
        s3_region=moto.region,
        s3_prefix="outputs",
        s3_access_key_id=moto.access_key_id,
        s3_secret_access_key=moto.secret_access_key,
        s3_part_size=5 * MiB,
    )


async def test_server_keeps_outputs_in_the_bucket(
    s3_api: Api, s3: Any, bucket: str, tmp_path: Path
) -> None:
    api = s3_api
    task = new_task(api)
    big = write_file(tmp_path / "big", 11 * MiB)
    data = (tmp_path / "big").read_bytes()
    url = (await store_outputs(api, task, {"output": data}, tmp_path / "w"))["output"]
    keys = await keys_in(s3, bucket)
    ((key, size),) = keys.items()
    assert key.startswith(f"outputs/persistent/1/{task.key}/test.output-") and size == 11 * MiB
    assert not (api.config.files_dir / "persistent").exists()  # nothing on local disk

    assert "X-Amz-Signature=" in url  # presigned: the bucket is private
    async with api.client.session.get(url, headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 206 and await resp.read() == big[:10]

    name = key.removeprefix("outputs/persistent/1/")
    resp = await api.client.get("/v2/storage/files", params={"secret": SECRET, "recursive": "1"})
    listing = await resp.json()
    assert [(f["name"], f["size"]) for f in listing["files"]] == [(name, 11 * MiB)]

    # Deleting by the URL given out (signature and all) removes the object.
    resp = await api.client.delete(
        "/v2/storage/files", data=orjson.dumps({"urls": [url]}), headers=AUTH
    )
    assert await resp.json() == {"deleted": [name], "freed": 11 * MiB, "usage": 0}
    assert await keys_in(s3, bucket) == {}

    # Volatile files go to the bucket too, and the sweep removes them after a week.
    vtask = new_task(api, {"type": "volatile"})
    await store_outputs(api, vtask, {"output": b"v" * 100}, tmp_path / "v")
    assert [k.split("/")[1] for k in await keys_in(s3, bucket)] == ["volatile"]
    storage = api.client.app[components.STORAGE]
    assert await storage.sweep(time.time() + 8 * DAY) == 1
    assert await keys_in(s3, bucket) == {}


async def test_server_with_a_public_bucket_url(
    make_api: Any, moto: Moto, s3: Any, bucket: str, tmp_path: Path
) -> None:
    api = await make_api(
        s3_bucket=bucket,
        s3_endpoint_url=moto.endpoint,
        s3_region=moto.region,
        s3_public_url=f"{moto.endpoint}/{bucket}",
        s3_access_key_id=moto.access_key_id,
        s3_secret_access_key=moto.secret_access_key,
    )
    task = new_task(api, {"type": "volatile"})
    url = (await store_outputs(api, task, {"output": b"public"}, tmp_path))["output"]
    assert url.startswith(f"{moto.endpoint}/{bucket}/volatile/1/{task.key}/test.output-")
    assert "?" not in url
    async with api.client.session.get(url) as resp:
        assert resp.status == 403  # the bucket is not public yet
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    await s3.put_bucket_policy(Bucket=bucket, Policy=orjson.dumps(policy).decode())
    async with api.client.session.get(url) as resp:
        assert resp.status == 200 and await resp.read() == b"public"


# -- the s3_signed task store -------------------------------------------------------------------


async def presigned_put(s3: Any, bucket: str, key: str) -> str:
    return await s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )


async def test_s3_signed_upload(api: Api, s3: Any, bucket: str, tmp_path: Path) -> None:
    url = await presigned_put(s3, bucket, "incoming/video.mp4")
    assert "X-Amz-Signature=" in url
    head = write_file(tmp_path / "src", 6 * MiB)
    data = (tmp_path / "src").read_bytes()
    task = new_task(api, {"type": "s3_signed", "url": url})
    assert "X-Amz" not in orjson.dumps(task.task_store).decode()
    result = await store_outputs(api, task, {"output": data}, tmp_path / "w")
    assert result["output"] == url.split("?")[0]
    assert result["width"] == 10
    stored = await read_object(s3, bucket, "incoming/video.mp4")
    assert len(stored) == 6 * MiB and stored[: len(head)] == head


async def test_s3_signed_upload_is_streamed(api: Api, s3: Any, bucket: str, tmp_path: Path) -> None:
    size = 64 * MiB
    url = await presigned_put(s3, bucket, "incoming/big.bin")
    (tmp_path / "w").mkdir()
    write_file(tmp_path / "w" / "output.bin", size, seed=3)
    task = new_task(api, {"type": "s3_signed", "url": url})
    outputs = api.client.app[components.RUNNER].outputs
    tracemalloc.start()
    try:
        await outputs.store(task, TWO_OUTPUTS_KIND, {"output": "output.bin"}, tmp_path / "w")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"64 MiB s3_signed PUT: peak traced memory {peak / MiB:.1f} MiB")
    assert peak < 8 * MiB, peak  # a chunk or two of 1 MiB, never the file
    assert (await s3.head_object(Bucket=bucket, Key="incoming/big.bin"))["ContentLength"] == size


async def test_s3_signed_urls_per_output_file(
    api: Api, s3: Any, bucket: str, tmp_path: Path
) -> None:
    urls = {name: await presigned_put(s3, bucket, f"in/{name}") for name in ("output", "thumbnail")}
    task = new_task(api, {"type": "s3_signed", "urls": urls})
    files = {"output": b"video", "thumbnail": b"image"}
    result = await store_outputs(api, task, files, tmp_path / "w", TWO_OUTPUTS_KIND)
    assert result["thumbnail"] == urls["thumbnail"].split("?")[0]
    assert await keys_in(s3, bucket) == {"in/output": 5, "in/thumbnail": 5}

    one = new_task(api, {"type": "s3_signed", "url": urls["output"]})
    with pytest.raises(OutputError, match="give urls, one per output file"):
        await store_outputs(api, one, files, tmp_path / "x", TWO_OUTPUTS_KIND)


async def test_s3_signed_failure_hides_the_signature(
    api: Api, s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await presigned_put(s3, "no-such-bucket-at-all", "x/y.bin")
    signature = url.split("X-Amz-Signature=")[1]
    task = new_task(api, {"type": "s3_signed", "url": url})
    with caplog.at_level(logging.DEBUG, logger="server"), pytest.raises(OutputError) as failed:
        await store_outputs(api, task, {"output": b"data"}, tmp_path)
    message = str(failed.value)
    assert "s3_signed URL at 127.0.0.1 failed: HTTP 404 NoSuchBucket" in message, message
    assert signature not in message and "X-Amz" not in message
    assert signature not in caplog.text


# -- the s3 task store --------------------------------------------------------------------------


async def test_s3_task_store_upload(
    make_api: Any, moto: Moto, s3: Any, bucket: str, tmp_path: Path
) -> None:
    api = await make_api(s3_part_size=5 * MiB)
    task = new_task(api, s3_store(moto, bucket))
    head = write_file(tmp_path / "src", 11 * MiB)
    result = await store_outputs(
        api, task, {"output": (tmp_path / "src").read_bytes()}, tmp_path / "w"
    )
    uri = result["output"]
    assert uri.startswith(f"s3://{bucket}/renders/{task.key}/test.output-") and uri.endswith(".bin")
    key = uri.removeprefix(f"s3://{bucket}/")
    assert result["output_url"] == f"{moto.endpoint}/{bucket}/{key}"
    got = await s3.head_object(Bucket=bucket, Key=key)
    assert got["ContentLength"] == 11 * MiB and got["ETag"].endswith('-3"')
    assert (await read_object(s3, bucket, key))[: len(head)] == head
    # Not a managed file: the Storage API does not list the task's own bucket.
    resp = await api.client.get("/v2/storage/files", params={"secret": SECRET})
    assert (await resp.json())["usage"] == 0


async def test_s3_failure_hides_the_credentials(
    api: Api, moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = new_task(api, s3_store(moto, "no-such-bucket-either"))
    with caplog.at_level(logging.DEBUG), pytest.raises(OutputError) as failed:
        await store_outputs(api, task, {"output": b"data"}, tmp_path)
    message = str(failed.value)
    assert "no-such-bucket-either" in message and "NoSuchBucket" in message, message
    for secret in (TASK_KEY_ID, TASK_SECRET):
        assert secret not in message
        assert secret not in caplog.text


async def test_uploads_respect_the_url_guard(
    make_api: Any, moto: Moto, s3: Any, bucket: str, tmp_path: Path
) -> None:
    api = await make_api(allow_private_networks=False)
    url = await presigned_put(s3, bucket, "guarded")
    signed = new_task(api, {"type": "s3_signed", "url": url})
    with pytest.raises(OutputError, match=r"refused: 127\.0\.0\.1 is not a public address"):
        await store_outputs(api, signed, {"output": b"x"}, tmp_path / "a")
    direct = new_task(api, s3_store(moto, bucket))
    with pytest.raises(OutputError, match=r"refused: 127\.0\.0\.1 is not a public address"):
        await store_outputs(api, direct, {"output": b"x"}, tmp_path / "b")
    # A name that resolves to loopback is refused when connecting.
    port = urlsplit(moto.endpoint).port
    named = new_task(api, s3_store(moto, bucket, endpoint_url=f"http://localhost:{port}"))
    with pytest.raises(OutputError):
        await store_outputs(api, named, {"output": b"x"}, tmp_path / "c")
    assert await keys_in(s3, bucket) == {}


# -- task_store checks and secrecy through the API ---------------------------------------------


async def test_credentials_are_never_shown_nor_stored_in_clear(
    api: Api, moto: Moto, s3: Any, bucket: str
) -> None:
    signed_url = await presigned_put(s3, bucket, "k")
    signature = signed_url.split("X-Amz-Signature=")[1]
    statuses = await api.create_ok(
        [
            {"task_name": "hello", "name": "A", "task_store": s3_store(moto, bucket)},
            {
                "task_name": "hello",
                "name": "B",
                "task_store": {"type": "s3_signed", "url": signed_url},
            },
        ],
        block=True,
    )
    for status in statuses:
        assert_status(status, "success")
    code, detailed = await api.status([s["key"] for s in statuses], details="true")
    assert code == 200
    assert detailed[0]["task_store"] == {
        "type": "s3",
        "bucket": bucket,
        "prefix": "renders/",
        "region": moto.region,
        "endpoint_url": moto.endpoint,
    }
    assert detailed[1]["task_store"] == {"type": "s3_signed", "url": signed_url.split("?")[0]}
    shown = orjson.dumps(detailed).decode()
    for secret in (TASK_KEY_ID, TASK_SECRET, signature):
        assert secret not in shown
    for db_file in api.config.data_dir.glob("taskstream.sqlite3*"):
        content = db_file.read_bytes()
        for secret in (TASK_KEY_ID, TASK_SECRET, signature):
            assert secret.encode() not in content, db_file


async def test_task_store_checks(api: Api, moto: Moto) -> None:
    cases = [
        ({"type": "youtube", "title": "x"}, "task_store.type", "youtube"),
        ({"type": "dropbox"}, "task_store.type", "unknown storage type 'dropbox'"),
        ({"type": "s3_signed"}, "task_store.url", "presigned PUT URL"),
        ({"type": "s3_signed", "url": "ftp://x/y"}, "task_store.url", "http or https"),
        ({"type": "s3_signed", "url": "https://u:p@h/x"}, "task_store.url", "user name"),
        ({"type": "s3", "bucket": "b!"}, "task_store.bucket", "bucket name"),
        ({"type": "s3", "bucket": "bkt"}, "task_store.access_key_id", "required"),
        ({"type": "s3", "bucket": "bkt"}, "task_store.region", "required"),
        (s3_store(moto, "bkt", secret_access_key=12345678), "task_store.secret_access_key", ""),
        (s3_store(moto, "bkt", endpoint_url="s3.example"), "task_store.endpoint_url", "http"),
        (s3_store(moto, "bkt", extra=1), "task_store.extra", "unknown parameter"),
        ({"type": "volatile", "url": "x"}, "task_store.url", "unknown parameter"),
    ]
    statuses = await api.create_ok(
        [{"task_name": "hello", "name": "x", "task_store": store} for store, *_ in cases]
    )
    for status, (_, field, words) in zip(statuses, cases, strict=True):
        assert_status(status, "error")
        problems = status["error"]["parameters"]
        assert field in problems, (field, problems)
        assert words in problems[field][0], problems
        assert TASK_SECRET not in orjson.dumps(status).decode()
        assert "12345678" not in orjson.dumps(status).decode()


def _session() -> Any:
    import aiohttp

    return aiohttp.ClientSession()


# -- end to end: a real kind's output through each task_store -------------------------------------


async def _thumb(api: Api, origin: Any, task_store: dict[str, Any]) -> dict[str, Any]:
    make_image(origin.root / "photo.jpg", width=320, height=240)
    return await api.run(
        {
            "task_name": "image.thumb",
            "url": origin.url("photo.jpg"),
            "width": 64,
            "height": 48,
            "format": "png",
            "task_store": task_store,
        }
    )


async def test_image_thumb_into_each_task_store(
    api: Api, origin: Any, moto: Moto, s3: Any, bucket: str
) -> None:
    local = await _thumb(api, origin, {"type": "volatile"})
    assert_status(local, "success")
    async with api.client.session.get(local["result"]["output"]) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(await resp.read())).size == (64, 48)

    own = await _thumb(api, origin, s3_store(moto, bucket))
    assert_status(own, "success")
    key = own["result"]["output"].removeprefix(f"s3://{bucket}/")
    assert key.startswith(f"renders/{own['key']}/image.thumb-") and key.endswith(".png")
    assert Image.open(io.BytesIO(await read_object(s3, bucket, key))).size == (64, 48)

    url = await presigned_put(s3, bucket, "thumbs/signed.png")
    signed = await _thumb(api, origin, {"type": "s3_signed", "url": url})
    assert_status(signed, "success")
    assert signed["result"]["output"] == url.split("?")[0]
    stored = await read_object(s3, bucket, "thumbs/signed.png")
    assert Image.open(io.BytesIO(stored)).size == (64, 48)

    _, detailed = await api.status([own["key"], signed["key"]], details="true")
    shown = orjson.dumps(detailed).decode()
    for secret in (TASK_KEY_ID, TASK_SECRET, url.split("?")[1]):
        assert secret not in shown


async def test_failed_upload_ends_the_task_in_error_without_secrets(
    api: Api, origin: Any, moto: Moto
) -> None:
    final = await _thumb(api, origin, s3_store(moto, "no-such-bucket-e2e"))
    assert_status(final, "error")
    assert "no-such-bucket-e2e" in final["error"]
    for secret in (TASK_KEY_ID, TASK_SECRET):
        assert secret not in final["error"]

"""The persistent and volatile systems on local disk: files served with Range and ETag, the
Storage API (listing, usage, deletion by path, URL and date, dry_run, expiration), the sweep."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from yarl import URL

from server import components
from server.storage import DAY, ManagedStorage
from tests.conftest import AUTH, SECRET, Api, assert_error_body
from tests.storagekit import TWO_OUTPUTS_KIND, new_task, store_outputs

ISO_MILLIS = "%Y-%m-%dT%H:%M:%S.%fZ"


def storage_of(api: Api) -> ManagedStorage:
    return api.client.app[components.STORAGE]


async def stored(api: Api, tmp_path: Path, data: bytes, kind: str = "persistent") -> tuple:
    """Stores one output file of a new task; returns (task key, URL, account-relative name)."""
    task = new_task(api, {"type": kind})
    result = await store_outputs(api, task, {"output": data}, tmp_path / task.key)
    url = result["output"]
    assert result["width"] == 10
    return task.key, url, f"{task.key}/{url.rsplit('/', 1)[1]}"


async def listing(api: Api, path: str = "", secret: str = SECRET, **query: str) -> Any:
    resp = await api.client.get(f"/v2/storage/files/{path}", params={"secret": secret, **query})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def delete(api: Api, path: str = "", **body: Any) -> Any:
    resp = await api.client.delete(
        f"/v2/storage/files/{path}", data=orjson.dumps(body), headers=AUTH
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


# -- serving ------------------------------------------------------------------------------------


async def test_output_file_is_served_with_range_and_etag(api: Api, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    task = new_task(api)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "thumb.jpg").write_bytes(data)
    outputs = api.client.app[components.RUNNER].outputs
    result = await outputs.store(task, TWO_OUTPUTS_KIND, {"output": "thumb.jpg"}, workdir)
    url = result["output"]
    assert url.startswith(f"{api.url}/files/persistent/")
    assert f"/{task.key}/test.outputs-" in url and url.endswith(".jpg")
    assert not (workdir / "thumb.jpg").exists()  # moved, not copied

    session = api.client.session
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"
        assert resp.headers["Content-Length"] == str(len(data))
        etag = resp.headers["ETag"]
        modified = resp.headers["Last-Modified"]
        assert etag and modified.endswith("GMT")
        assert await resp.read() == data

    async with session.get(url, headers={"Range": "bytes=100-299"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-299/{len(data)}"
        assert resp.headers["Content-Length"] == "200"
        assert await resp.read() == data[100:300]

    async with session.get(url, headers={"Range": f"bytes=-{10}"}) as resp:
        assert resp.status == 206
        assert await resp.read() == data[-10:]

    async with session.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert await resp.read() == b""
    async with session.get(url, headers={"If-Modified-Since": modified}) as resp:
        assert resp.status == 304
    async with session.get(url, headers={"If-None-Match": '"something-else"'}) as resp:
        assert resp.status == 200

    async with session.get(url + "x") as resp:
        assert resp.status == 404
    escape = URL(f"{api.url}/files/persistent/..%2F..%2Ftaskstream.sqlite3", encoded=True)
    async with session.get(escape) as resp:
        assert resp.status == 404


async def test_output_files_of_one_task(api: Api, tmp_path: Path) -> None:
    task = new_task(api, {"type": "volatile"})
    result = await store_outputs(
        api, task, {"output": b"a" * 10, "thumbnail": b"b" * 20}, tmp_path, TWO_OUTPUTS_KIND
    )
    for name, size in (("output", 10), ("thumbnail", 20)):
        assert f"/files/volatile/1/{task.key}/" in result[name]
        async with api.client.session.get(result[name]) as resp:
            assert len(await resp.read()) == size
    # Volatile files are not part of the persistent storage the Storage API manages.
    assert (await listing(api))["usage"] == 0


async def test_missing_output_file_is_a_task_error(api: Api, tmp_path: Path) -> None:
    from server.outputs import OutputError

    outputs = api.client.app[components.RUNNER].outputs
    with pytest.raises(OutputError, match="did not write its output file 'output'"):
        await outputs.store(new_task(api), TWO_OUTPUTS_KIND, {"output": "nope.jpg"}, tmp_path)
    (tmp_path / "w").mkdir()
    with pytest.raises(OutputError):  # a path that leaves the work folder
        await outputs.store(
            new_task(api), TWO_OUTPUTS_KIND, {"output": "../storagekit.py"}, tmp_path / "w"
        )


# -- listing ------------------------------------------------------------------------------------


async def test_listing_and_usage(api: Api, tmp_path: Path) -> None:
    before = time.time()
    key1, _, name1 = await stored(api, tmp_path, b"x" * 1000)
    key2, _, name2 = await stored(api, tmp_path, b"y" * 234)
    _, _, name3 = await stored(api, tmp_path, b"z" * 5, kind="volatile")

    root = await listing(api)
    assert root == {"files": [], "directories": sorted([f"{key1}/", f"{key2}/"]), "usage": 1234}

    folder = await listing(api, key1)
    assert folder["directories"] == [] and folder["usage"] == 1000
    (entry,) = folder["files"]
    assert entry["name"] == name1.split("/")[1] and entry["size"] == 1000
    stamp = datetime.strptime(entry["last_modified"], ISO_MILLIS).replace(tzinfo=UTC)
    assert len(entry["last_modified"]) == len("2013-10-28T20:22:21.000Z")
    assert before - 1 <= stamp.timestamp() <= time.time() + 1
    assert await listing(api, f"{key1}/") == folder

    everything = await listing(api, recursive="true")
    assert [f["name"] for f in everything["files"]] == sorted([name1, name2])
    assert everything["usage"] == 1234

    one = await listing(api, name2)
    assert [(f["name"], f["size"]) for f in one["files"]] == [(name2.split("/")[1], 234)]
    assert one["usage"] == 234

    assert await listing(api, "NOSUCHKEY") == {"files": [], "directories": [], "usage": 0}
    assert (await listing(api, name3))["files"] == []  # a volatile file is not listed
    resp = await api.client.get("/v2/storage/files", params={"secret": SECRET})
    assert (await resp.json()) == root


async def test_accounts_see_and_delete_only_their_files(api: Api, tmp_path: Path) -> None:
    other = await api.client.app[components.STORE].create_account("other-secret")
    key, url, name = await stored(api, tmp_path, b"mine")
    task = new_task(api, account_id=other.id)
    theirs = (await store_outputs(api, task, {"output": b"theirs!"}, tmp_path / "o"))["output"]

    mine = await listing(api)
    assert mine["directories"] == [f"{key}/"] and mine["usage"] == 4
    assert await listing(api, secret="other-secret") == {
        "files": [],
        "directories": [f"{task.key}/"],
        "usage": 7,
    }
    assert (await listing(api, name, secret="other-secret"))["files"] == []

    # Their file by path or by URL, and everything: none of it is touched.
    resp = await api.client.delete(
        "/v2/storage/files", data=orjson.dumps({"urls": [url], "secret": "other-secret"})
    )
    assert (await resp.json())["deleted"] == []
    done = await delete(api, task.key)
    assert done == {"deleted": [], "freed": 0, "usage": 4}
    done = await delete(api, urls=[theirs])
    assert done["deleted"] == []
    done = await delete(api)
    assert done == {"deleted": [name], "freed": 4, "usage": 0}
    async with api.client.session.get(theirs) as resp:
        assert resp.status == 200


async def test_storage_api_needs_credentials(api: Api) -> None:
    resp = await api.client.get("/v2/storage/files")
    assert resp.status == 401
    assert_error_body(await resp.json(), "secret")
    resp = await api.client.get("/v2/storage/files", params={"secret": "wrong"})
    assert resp.status == 401
    resp = await api.client.delete("/v2/storage/files")
    assert resp.status == 401
    resp = await api.client.get("/v2/storage/expiration")
    assert resp.status == 401
    resp = await api.client.post("/v2/storage/expiration", data=b'{"days": 3}')
    assert resp.status == 401
    resp = await api.client.get("/v2/storage/files", params={"secret": SECRET, "recursive": "x"})
    assert resp.status == 400
    assert_error_body(await resp.json(), "recursive", "querystring")


# -- deleting -----------------------------------------------------------------------------------


async def test_delete_a_file_a_folder_everything(api: Api, tmp_path: Path) -> None:
    key1, url1, name1 = await stored(api, tmp_path, b"1" * 10)
    _, url2, name2 = await stored(api, tmp_path, b"2" * 20)
    key3, _, name3 = await stored(api, tmp_path, b"3" * 30)
    _, _, name4 = await stored(api, tmp_path, b"4" * 40)
    files = api.config.files_dir

    done = await delete(api, name1)
    assert done == {"deleted": [name1], "freed": 10, "usage": 90}
    async with api.client.session.get(url1) as resp:
        assert resp.status == 404
    assert not (files / "persistent" / "1" / key1).exists()  # its empty folder goes too

    done = await delete(api, f"{key3}/")
    assert done == {"deleted": [name3], "freed": 30, "usage": 60}
    assert await delete(api, name1) == {"deleted": [], "freed": 0, "usage": 60}

    done = await delete(api)
    assert done == {"deleted": sorted([name2, name4]), "freed": 60, "usage": 0}
    async with api.client.session.get(url2) as resp:
        assert resp.status == 404
    assert not any(p.is_file() for p in files.rglob("*"))
    assert (await listing(api))["directories"] == []


async def test_delete_by_url_and_dry_run(api: Api, tmp_path: Path) -> None:
    _, url1, name1 = await stored(api, tmp_path, b"1" * 10)
    _, url2, name2 = await stored(api, tmp_path, b"2" * 20)
    _, url3, _ = await stored(api, tmp_path, b"3" * 30)

    body = {"urls": [url1, url2, f"{api.url}/files/persistent/1/NOPE/x"], "dry_run": True}
    done = await delete(api, **body)
    assert sorted(done["deleted"]) == sorted([name1, name2])
    assert done["freed"] == 30 and done["usage"] == 60
    for url in (url1, url2):
        async with api.client.session.get(url) as resp:
            assert resp.status == 200  # nothing deleted yet
    assert (await listing(api))["usage"] == 60

    # urls wins over every other selection parameter: the path selects everything otherwise.
    resp = await api.client.delete(
        "/v2/storage/files/",
        data=orjson.dumps({"urls": [url1, url2 + "?signature=ignored"], "max_age": 0}),
        headers=AUTH,
    )
    done = await resp.json()
    assert sorted(done["deleted"]) == sorted([name1, name2])
    assert done == {**done, "freed": 30, "usage": 30}
    for url, status in ((url1, 404), (url2, 404), (url3, 200)):
        async with api.client.session.get(url) as resp:
            assert resp.status == status

    # A DELETE without a body takes its options from the query string.
    resp = await api.client.delete(
        "/v2/storage/files", params={"secret": SECRET, "urls": url3, "dry_run": "true"}
    )
    assert (await resp.json())["freed"] == 30
    resp = await api.client.delete("/v2/storage/files", params={"urls": url3}, headers=AUTH)
    assert (await resp.json())["usage"] == 0


async def test_delete_by_date(api: Api, tmp_path: Path) -> None:
    _, _, old = await stored(api, tmp_path, b"o" * 10)
    middle = time.time()
    while time.time() == middle:  # the clock must move on between the two files
        pass
    _, _, new = await stored(api, tmp_path, b"n" * 20)
    mid = datetime.fromtimestamp(middle, UTC)

    done = await delete(api, **{"to": mid.isoformat(), "dry_run": True})
    assert done["deleted"] == [old]
    # Without a timezone, a date is UTC.
    naive = mid.replace(tzinfo=None).isoformat()
    assert (await delete(api, **{"from": naive, "dry_run": True}))["deleted"] == [new]
    zulu = mid.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (await delete(api, **{"from": zulu, "dry_run": True}))["deleted"] == [new]
    later = datetime.fromtimestamp(middle + 3600, UTC).isoformat()
    assert (await delete(api, **{"from": later, "dry_run": True}))["deleted"] == []

    # max_age: older than so many days. Nothing is a day old; everything is older than 0 days.
    assert (await delete(api, max_age=1, dry_run=True))["deleted"] == []
    done = await delete(api, max_age=0, **{"from": mid.isoformat()})
    assert done == {"deleted": [new], "freed": 20, "usage": 10}

    for bad in ({"from": "yesterday"}, {"to": 12}, {"max_age": -1}, {"max_age": "x"}):
        resp = await api.client.delete("/v2/storage/files", data=orjson.dumps(bad), headers=AUTH)
        assert resp.status == 400
        assert_error_body(await resp.json(), next(iter(bad)), "body")


# -- expiration and the sweep -------------------------------------------------------------------


async def expiration(api: Api) -> Any:
    resp = await api.client.get("/v2/storage/expiration", params={"secret": SECRET})
    assert resp.status == 200
    return await resp.json()


async def test_expiration_setting(api: Api) -> None:
    assert await expiration(api) == 0
    resp = await api.client.post("/v2/storage/expiration", data=b'{"days": 30}', headers=AUTH)
    assert resp.status == 200 and await resp.json() == 30
    assert await expiration(api) == 30
    resp = await api.client.post(
        "/v2/storage/expiration", data=orjson.dumps({"days": 0, "secret": SECRET})
    )
    assert await resp.json() == 0 and await expiration(api) == 0
    for bad in (b"{}", b'{"days": -1}', b'{"days": 1.5}', b'{"days": true}', b'{"days": "3"}'):
        resp = await api.client.post("/v2/storage/expiration", data=bad, headers=AUTH)
        assert resp.status == 400
        assert_error_body(await resp.json(), "days", "body")


async def test_sweep_removes_expired_files(api: Api, tmp_path: Path) -> None:
    storage = storage_of(api)
    other = await api.client.app[components.STORE].create_account("other-secret")
    _, kept_url, kept = await stored(api, tmp_path, b"p" * 10)
    _, volatile_url, _ = await stored(api, tmp_path, b"v" * 20, kind="volatile")
    task = new_task(api, account_id=other.id)
    other_url = (await store_outputs(api, task, {"output": b"x"}, tmp_path / "o"))["output"]
    now = time.time()

    async def alive(url: str) -> bool:
        async with api.client.session.get(url) as resp:
            return resp.status == 200

    # Six days on nothing is due; eight days on the volatile file is.
    assert await storage.sweep(now + 6 * DAY) == 0
    assert await storage.sweep(now + 8 * DAY) == 1
    assert not await alive(volatile_url)
    assert await alive(kept_url) and await alive(other_url)

    # Expiration applies to the files already stored, of that account only.
    resp = await api.client.post("/v2/storage/expiration", data=b'{"days": 10}', headers=AUTH)
    assert resp.status == 200
    assert await storage.sweep(now + 9 * DAY) == 0
    assert await storage.sweep(now + 11 * DAY) == 1
    assert not await alive(kept_url)
    assert await alive(other_url)
    assert (await listing(api)) == {"files": [], "directories": [], "usage": 0}
    assert await storage.sweep(now + 1000 * DAY) == 0  # days=0 for the other account: never
    del kept


async def test_background_sweep_runs_on_start_and_when_woken(make_api: Any, tmp_path: Path) -> None:
    api = await make_api(storage_sweep_interval=3600.0)
    storage = storage_of(api)
    await storage.swept.wait()  # the sweep at start-up
    _, url, _ = await stored(api, tmp_path, b"v" * 20, kind="volatile")
    storage.clock = lambda: time.time() + 8 * DAY
    storage.swept.clear()
    # Setting an expiration wakes the sweep at once (no waiting for the interval).
    resp = await api.client.post("/v2/storage/expiration", data=b'{"days": 0}', headers=AUTH)
    assert resp.status == 200
    await storage.swept.wait()
    async with api.client.session.get(url) as resp:
        assert resp.status == 404


async def test_files_and_expiration_survive_a_restart(make_api: Any, tmp_path: Path) -> None:
    first = await make_api()
    _, url, name = await stored(first, tmp_path, b"r" * 50)
    _, volatile_url, _ = await stored(first, tmp_path, b"v" * 5, kind="volatile")
    resp = await first.client.post("/v2/storage/expiration", data=b'{"days": 2}', headers=AUTH)
    assert resp.status == 200
    port, data_dir = first.config.port, first.config.data_dir
    await first.client.close()

    second = await make_api(port=port, data_dir=data_dir)
    assert await expiration(second) == 2
    assert (await listing(second, recursive="1"))["files"][0]["name"] == name
    async with second.client.session.get(url) as resp:
        assert resp.status == 200 and await resp.read() == b"r" * 50
    assert await storage_of(second).sweep(time.time() + 3 * DAY) == 1
    assert await storage_of(second).sweep(time.time() + 8 * DAY) == 1
    for gone in (url, volatile_url):
        async with second.client.session.get(gone) as resp:
            assert resp.status == 404

"""Property-based tests (hypothesis) against one real server process for the whole module:
random and malformed bodies, random task definitions, random status queries and random media
bytes. Every answer is a 4xx with the reference's error body, or a 200 whose tasks end in
`success` or in a clean `error`; never a 5xx, a traceback in the server log, or a dead worker.

The server runs as a subprocess (`tests/serverproc.py`) and the tests are synchronous, so one
server and one origin serve every example of the module and the tests need no event loop. The
origin is a stdlib HTTP server in a thread for the same reason. Only the server's own kinds are
loaded: the test kinds that crash workers on purpose are not.

Nothing generated reaches beyond loopback: every URL that passes validation is one of the
origin's, and random strings that would pass as URLs are filtered out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import http.client
import http.server
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.declare import check_url
from tests.conftest import assert_error_body, assert_status
from tests.mediagen import make_audio, make_image, make_video
from tests.serverproc import AUTH, ServerProcess

ENDPOINTS = ["/v2/create", "/v2/create_stream", "/v2/status", "/v2/status_stream"]
STREAMS = ("/v2/create_stream", "/v2/status_stream", "/v2/stream")
URL_TYPES = ("url", "list of urls")
ENDED = ("success", "error")
FUZZ = settings(deadline=None, max_examples=100)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Target:
    """The server under test, its origin, and what the tests learnt from it at the start."""

    server: ServerProcess
    origin_root: Path
    origin_base: str
    kinds: list[dict[str, Any]]
    keys: list[str]  # keys of tasks that exist (for status queries)
    workers: list[int]
    names: Iterator[int]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=AUTH if headers is None else headers)
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, orjson.dumps(body))

    def add_file(self, data: bytes, suffix: str = "") -> str:
        """Serves `data` from the origin under a new name; returns its URL."""
        name = f"f{next(self.names)}{suffix}"
        (self.origin_root / name).write_bytes(data)
        return f"{self.origin_base}/{name}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "origin"
    root.mkdir()
    origin = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=origin.serve_forever, daemon=True)
    thread.start()
    server = ServerProcess(
        tmp / "data",
        extra_kinds=False,
        args=("--allow-private-networks", "--fetch-timeout", "10", "--callback-timeout", "2"),
    )
    try:
        asyncio.run(server.start())
        t = Target(
            server=server,
            origin_root=root,
            origin_base=f"http://127.0.0.1:{origin.server_address[1]}",
            kinds=[],
            keys=[],
            workers=[],
            names=itertools.count(),
        )
        reply = t.request("GET", "/v2/kinds")
        assert reply.status == 200
        t.kinds = reply.json()
        assert not [k for k in t.kinds if k["name"].startswith("test.")]
        reply = t.post("/v2/create", {"tasks": [{"task_name": "hello", "name": "k"}] * 3})
        assert reply.status == 200, reply
        t.keys = [s["key"] for s in reply.json()]
        t.workers = asyncio.run(server.wait_workers(2))
        assert len(t.workers) == 2
        yield t
    finally:
        server.stop()
        origin.shutdown()
        origin.server_close()


@pytest.fixture
def healthy(target: Target) -> Iterator[Target]:
    """After the test: no traceback in the server log, the same workers, and they run tasks."""
    start = len(target.server.log_path.read_bytes())
    yield target
    log = target.server.log_path.read_bytes()[start:].decode(errors="replace")
    unexpected = [r for r in log_records(log) if "Traceback" in r and not _lingering_noise(r)]
    assert not unexpected, unexpected[0][-5000:]
    reply = target.post(
        "/v2/create", {"tasks": [{"task_name": "hello", "name": "w"}] * 4, "block": True}
    )
    assert reply.status == 200, reply
    assert [s["result"] for s in reply.json()] == ["Hello w"] * 4
    assert target.server.worker_pids() == target.workers, "a worker died"
    assert target.request("GET", "/healthz").status == 200


def log_records(log: str) -> list[str]:
    """The server log split into records (each starts with a timestamp)."""
    return [r for r in re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ )", log) if r]


def _lingering_noise(record: str) -> bool:
    """aiohttp's own log of a body it cannot decode, raised again by its lingering read after
    the server answered 400 (aio-libs/aiohttp#1710): nothing the server can catch."""
    return (
        "aiohttp.server: Unhandled exception" in record
        and "await payload.readany()" in record
        and record.rstrip().endswith("Can not decode content-encoding: gzip")
    )


# -- contracts --------------------------------------------------------------------------------


def assert_clean_end(status: dict[str, Any]) -> None:
    """An ended task: success, or an error a person can read (parameters or a message)."""
    assert_status(status)
    assert status["status"] in ENDED, status
    if status["status"] == "error":
        error = status["error"]
        if isinstance(error, dict):
            assert set(error) == {"parameters"}, status
            for name, problems in error["parameters"].items():
                assert isinstance(name, str) and problems, status
                assert all(isinstance(p, str) and p for p in problems), status
        else:
            assert isinstance(error, str) and error, status
            assert "internal error" not in error, status


def check_reply(reply: Reply, path: str) -> list[dict[str, Any]]:
    """A 4xx with the error body, or a 200 with statuses (streams: every line parses)."""
    assert reply.status < 500, (reply.status, reply.body[:2000])
    if reply.status >= 400:
        body = reply.json()
        assert isinstance(body, dict) and body.get("errors"), body
        assert_error_body(body, body["errors"][0]["name"])
        if reply.status in (429, 503):
            assert int(reply.headers["Retry-After"]) >= 1
        return []
    assert reply.status == 200, reply
    if path.startswith(STREAMS):
        lines = [orjson.loads(line) for line in reply.body.splitlines() if line.strip()]
        first, changes = lines[0], lines[1:]
        assert isinstance(first, list)
        for status in [*first, *changes]:
            assert_status(status)
        keys = {s["key"] for s in first}
        ended = {s["key"] for s in [*first, *changes] if s["status"] in ENDED}
        assert ended == keys, "a stream closed before every task ended"
        return first
    statuses = reply.json()
    assert isinstance(statuses, list) and statuses
    for status in statuses:
        assert_status(status)
    return statuses


# -- strategies -------------------------------------------------------------------------------


def _not_a_url(s: str) -> bool:
    return check_url(s)[1] is not None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bad_urls = st.sampled_from(
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//127.0.0.1/x",
        "http://[::1",
        "http://127.0.0.1:99999/",
        "http://user:pw@127.0.0.1:1/x",
        "",
    ]
) | st.text(max_size=40).filter(_not_a_url)


def deep_json(depth: int) -> bytes:
    """JSON nested `depth` levels deep, written by hand: no encoder has to accept it."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def encode(value: Any, draw: Any) -> bytes:
    """JSON text of a value, from orjson or the standard library (which also writes integers
    beyond 64 bits, and NaN, which is not JSON)."""
    if draw(st.booleans()):
        with contextlib.suppress(TypeError):
            return orjson.dumps(value)
    return json.dumps(value).encode()


def value_for(param: dict[str, Any], urls: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Values of a declared parameter's type, valid or not (choices, bounds, defaults)."""
    kind = param["type"]
    typed: list[st.SearchStrategy[Any]] = []
    if param.get("choices"):
        typed.append(st.sampled_from(param["choices"]))
    if "default" in param:
        typed.append(st.just(param["default"]))
    low, high = param.get("min"), param.get("max")
    if kind == "integer":
        typed.append(st.integers(min_value=-(2**40), max_value=2**40))
        if low is not None or high is not None:
            typed.append(
                st.integers(
                    min_value=int(low if low is not None else high - 100) - 2,
                    max_value=int(high if high is not None else low + 100) + 2,
                )
            )
    elif kind == "float":
        typed.append(st.floats(allow_nan=False, allow_infinity=False))
        if low is not None and high is not None:
            typed.append(st.floats(min_value=low, max_value=high))
    elif kind == "boolean":
        typed.append(st.booleans())
    elif kind == "color":
        typed.append(st.from_regex(r"\A#[0-9a-fA-F]{6}\Z") | st.text(max_size=8))
    elif kind == "url":
        typed.append(urls)
    elif kind == "list of urls":
        typed.append(st.lists(urls, max_size=3))
    elif kind == "list of strings":
        typed.append(st.lists(st.text(max_size=10), max_size=4))
    else:
        typed.append(st.text(max_size=40))
    return st.one_of(*typed)


def plausible(param: dict[str, Any]) -> Any:
    """A valid-looking value for a required parameter, so a media task gets to its input."""
    if param.get("choices"):
        return param["choices"][0]
    if "default" in param:
        return param["default"]
    low = param.get("min")
    return {
        "integer": int(low) if low is not None else 16,
        "float": float(low) if low is not None else 1.0,
        "boolean": False,
        "color": "#336699",
        "list of strings": ["taskstream"],
    }.get(param["type"], "taskstream")


# -- the tests --------------------------------------------------------------------------------


def test_random_and_malformed_bodies(healthy: Target) -> None:
    t = healthy
    hello = {"task_name": "hello", "name": "x"}

    @st.composite
    def bodies(draw: Any) -> bytes:
        shape = draw(st.integers(0, 7))
        if shape == 0:
            return draw(st.binary(max_size=300))
        if shape == 1:
            return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
        if shape == 2:
            return encode(draw(json_values | st.floats()), draw)
        if shape == 3:  # a plausible body with random values
            body = draw(
                st.dictionaries(st.sampled_from(["tasks", "block", "details"]), json_values)
            )
            return encode(body, draw)
        if shape == 4:  # a good body, cut or with bytes changed
            good = orjson.dumps({"tasks": [hello] * draw(st.integers(1, 3)), "block": True})
            cut = draw(st.integers(0, len(good)))
            return good[:cut] + draw(st.binary(max_size=8))
        if shape == 5:  # deep nesting, in the body or in task_metas
            depth = draw(st.integers(1, 3000))
            if draw(st.booleans()):
                return b'{"tasks": ' + b"[" * depth + b"]" * depth + b"}"
            metas = deep_json(depth)
            return (
                b'{"block": true, "tasks": [{"task_name": "hello", "name": "x", "task_metas": %s}]}'
                % metas
            )
        if draw(st.booleans()):  # valid bodies, for either kind of endpoint
            return orjson.dumps({"tasks": t.keys, "block": True})
        return orjson.dumps({"tasks": [hello] * draw(st.integers(1, 3)), "block": True})

    headers = st.sampled_from(
        [
            AUTH,
            AUTH,
            AUTH,
            {},
            {"Authorization": "Secret wrong"},
            {"Authorization": "Bearer x"},
            {**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
            {**AUTH, "Content-Encoding": "gzip"},
        ]
    )

    good = orjson.dumps({"tasks": [hello], "block": True})
    gzipped = {**AUTH, "Content-Encoding": "gzip"}

    @FUZZ
    @given(path=st.sampled_from(ENDPOINTS), body=bodies(), headers=headers, compress=st.booleans())
    @example(path="/v2/create", body=good, headers=AUTH, compress=False)
    @example(path="/v2/create_stream", body=good, headers=gzipped, compress=True)
    @example(path="/v2/create", body=good, headers={}, compress=False)
    @example(path="/v2/create", body=good[:-1], headers=AUTH, compress=False)
    def examples(path: str, body: bytes, headers: dict[str, str], compress: bool) -> None:
        if compress and headers.get("Content-Encoding") == "gzip":
            body = gzip.compress(body)
        reply = t.request("POST", path, body, headers)
        seen[reply.status] += 1
        statuses = check_reply(reply, path)
        if path.startswith("/v2/status") or path in STREAMS:
            return
        for status in statuses:
            if status["status"] in ENDED:
                assert_clean_end(status)

    seen: Counter[int] = Counter()
    examples()
    print(seen)
    assert {200, 400, 401} <= set(seen), seen  # the examples reached past the parser


def test_random_task_definitions(healthy: Target) -> None:
    t = healthy
    image = t.add_file(make_image(t.origin_root / "seed.png", fmt="PNG").read_bytes(), ".png")
    good = st.sampled_from([image, t.add_file(b"not media"), f"{t.origin_base}/missing"])
    urls = st.one_of(good, good, good, bad_urls)
    names = [k["name"] for k in t.kinds]

    @st.composite
    def definitions(draw: Any) -> dict[str, Any]:
        kind = draw(st.sampled_from(t.kinds))
        name = draw(st.sampled_from([kind["name"]] * 8 + names + [None]))
        definition: dict[str, Any] = {"task_name": draw(json_values) if name is None else name}
        for param in kind["parameters"]:
            if draw(st.integers(0, 9)) < (9 if param["required"] else 3):
                # Two times in three a value of the declared type, else anything.
                typed = draw(st.integers(0, 2))
                definition[param["name"]] = draw(value_for(param, urls) if typed else json_values)
        if not draw(st.integers(0, 4)):
            extra = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2))
            for key, value in extra.items():
                definition.setdefault(key, value)
        if not draw(st.integers(0, 4)):
            definition["task_metas"] = draw(json_values)
        if not draw(st.integers(0, 4)):
            definition["task_store"] = draw(
                json_values
                | st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(
                            ["persistent", "volatile", "local", "s3_signed", "floppy", ""]
                        )
                    },
                    optional={
                        "url": urls,
                        "urls": st.dictionaries(st.text(max_size=8), urls, max_size=2),
                    },
                )
                | st.fixed_dictionaries(
                    # An S3 store always points at the origin: nothing leaves loopback.
                    {"type": st.just("s3"), "endpoint_url": st.just(t.origin_base)},
                    optional={
                        "bucket": st.sampled_from(["bucket", "B", "a" * 70]),
                        "region": st.sampled_from(["eu-west-1", "mars"]),
                        "access_key_id": st.text(max_size=8),
                        "secret_access_key": st.text(max_size=8),
                        "prefix": st.text(max_size=8),
                    },
                )
            )
        return definition

    @FUZZ
    @given(tasks=st.lists(definitions(), min_size=1, max_size=4), single=st.booleans())
    @example(tasks=[{"task_name": "hello", "name": "x"}, {"task_name": "hello"}], single=False)
    @example(tasks=[{"task_name": "image.info", "url": image}], single=True)
    def examples(tasks: list[dict[str, Any]], single: bool) -> None:
        body = {"tasks": tasks[0] if single else tasks, "block": True}
        reply = t.request("POST", "/v2/create", json.dumps(body).encode())
        seen[reply.status] += 1
        statuses = check_reply(reply, "/v2/create")
        if reply.status == 200:
            assert len(statuses) == (1 if single else len(tasks))
            for status in statuses:
                assert_clean_end(status)
                error = status.get("error")
                seen["parameters" if isinstance(error, dict) else status["status"]] += 1

    seen: Counter[int | str] = Counter()
    examples()
    print(seen)
    assert seen["success"] and seen["parameters"], seen  # valid and invalid definitions


def test_random_status_queries(healthy: Target) -> None:
    t = healthy
    names = st.sampled_from(["tasks", "tasks", "block", "details", "secret", "api_key"]) | st.text(
        max_size=10
    )
    values = (
        st.sampled_from([*t.keys, "true", "false", "1", "0", "yes", ""])
        | st.text(max_size=30)
        | st.just(t.keys[0].lower())
    )
    flags = st.sampled_from(["block", "details"])
    flag_values = st.sampled_from(["true", "false", "1", "0", "yes", "no", "", "maybe"])
    plausible_queries = st.tuples(
        st.lists(st.sampled_from(t.keys), min_size=1, max_size=3),
        st.lists(st.tuples(flags, flag_values), max_size=2),
    ).map(lambda q: urlencode([("tasks", k) for k in q[0]] + q[1]))
    queries = st.one_of(
        plausible_queries,
        st.lists(st.tuples(names, values), max_size=6).map(urlencode),
        st.text(max_size=60).map(lambda s: quote(s, safe="&=%+")),
    )
    paths = st.sampled_from(["/v2/status", "/v2/status", "/v2/status_stream", "/v2/stream"])

    @FUZZ
    @given(path=paths, query=queries, auth=st.integers(0, 3))
    @example(path="/v2/status", query=urlencode({"tasks": t.keys[0]}), auth=1)
    @example(path="/v2/status", query=urlencode({"tasks": t.keys[0]}), auth=0)
    @example(path="/v2/stream", query=urlencode({"tasks": "AAAA"}), auth=1)
    @example(path="/v2/status", query="", auth=1)
    def examples(path: str, query: str, auth: int) -> None:
        reply = t.request("GET", f"{path}?{query}", headers=AUTH if auth else {})
        seen[reply.status] += 1
        statuses = check_reply(reply, path)
        if reply.status == 200:
            assert {s["key"] for s in statuses} <= set(t.keys)

    seen: Counter[int] = Counter()
    examples()
    print(seen)
    assert {200, 400, 401, 404} <= set(seen), seen


def test_random_media_bytes(healthy: Target) -> None:
    t = healthy
    media_kinds = [
        k for k in t.kinds if any(p["type"] in URL_TYPES and p["required"] for p in k["parameters"])
    ]
    (image_info,) = [k for k in media_kinds if k["name"] == "image.info"]
    root = t.origin_root
    seeds = [
        make_image(root / "s.jpg", exif_orientation=6).read_bytes(),
        make_image(root / "s.png", fmt="PNG").read_bytes(),
        make_image(root / "s.gif", fmt="GIF").read_bytes(),
        make_image(root / "s.webp", fmt="WEBP").read_bytes(),
        make_video(root / "s.mp4", width=64, height=48, seconds=0.4, fps=10).read_bytes(),
        make_video(
            root / "s.webm",
            codec="libvpx-vp9",
            width=64,
            height=48,
            seconds=0.4,
            fps=10,
            audio_codec="libopus",
        ).read_bytes(),
        make_audio(root / "s.mp3", codec="mp3", seconds=0.3).read_bytes(),
        make_audio(root / "s.wav", codec="pcm_s16le", seconds=0.3).read_bytes(),
    ]

    @st.composite
    def media(draw: Any) -> bytes:
        how = draw(st.integers(0, 5))
        if how == 0:
            return draw(st.binary(max_size=2048))
        seed = draw(st.sampled_from(seeds))
        if how == 5:  # intact, so that some tasks succeed
            return seed
        if how == 1:  # cut short
            return seed[: draw(st.integers(0, len(seed)))]
        if how == 2:  # a known header, then noise
            return seed[: draw(st.integers(1, 64))] + draw(st.binary(max_size=2048))
        data = bytearray(seed)  # bytes changed here and there
        for _ in range(draw(st.integers(1, 16 if how == 3 else 200))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)

    @FUZZ
    @given(kind=st.sampled_from(media_kinds), data=media())
    @example(kind=image_info, data=seeds[0])
    @example(kind=image_info, data=seeds[0][:100])
    def examples(kind: dict[str, Any], data: bytes) -> None:
        url = t.add_file(data)
        definition: dict[str, Any] = {"task_name": kind["name"]}
        for param in kind["parameters"]:
            if param["type"] == "url" and param["required"]:
                definition[param["name"]] = url
            elif param["type"] == "list of urls" and param["required"]:
                definition[param["name"]] = [url]
            elif param["required"]:
                definition[param["name"]] = plausible(param)
        reply = t.post("/v2/create", {"tasks": [definition], "block": True})
        (status,) = check_reply(reply, "/v2/create")
        assert_clean_end(status)
        assert not isinstance(status.get("error"), dict), status  # the definition was valid
        seen[status["status"]] += 1

    seen: Counter[str] = Counter()
    examples()
    print(seen)
    assert seen["success"] and seen["error"], seen


@pytest.mark.parametrize("depth", [1, 32, 33, 100, 254, 255, 256, 1023, 1024, 1025, 100_000])
def test_deeply_nested_task_metas(healthy: Target, depth: int) -> None:
    """Whatever the depth: a 400, a task in error naming task_metas, or a task whose status
    carries its task_metas back."""
    metas = deep_json(depth)
    body = b'{"block": true, "tasks": [{"task_name": "hello", "name": "x", "task_metas": %s}]}'
    reply = healthy.request("POST", "/v2/create", body % metas)
    statuses = check_reply(reply, "/v2/create")
    if not statuses:
        assert reply.status == 400, reply
        return
    (status,) = statuses
    assert_clean_end(status)
    again = healthy.post("/v2/status", {"tasks": [status["key"]], "details": True})
    assert again.status == 200, again
    if status["status"] == "error":
        assert list(status["error"]["parameters"]) == ["task_metas"], status
    else:
        assert again.json()[0]["task_metas"] == orjson.loads(metas)


def test_a_png_cut_inside_its_pixels_is_a_clean_error(tmp_path: Path) -> None:
    """Found by test_random_media_bytes: Pillow reads a PNG's eXIf lazily, after open_image."""
    from tasks.declare import Job, TaskError
    from tasks.image_info import KIND

    png = make_image(tmp_path / "a.png", fmt="PNG").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(png[: png.index(b"IDAT") + 4])
    with pytest.raises(TaskError, match="could not be read"):
        KIND.run(Job(params={}, inputs={"url": str(cut)}, workdir=tmp_path))

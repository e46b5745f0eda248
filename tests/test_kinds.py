"""Declarations drive validation, GET /v2/kinds and the README."""

from __future__ import annotations

from pathlib import Path

from tasks import registry
from tasks.declare import INTEGER, Param
from tasks.docs import markdown
from tests.conftest import Api

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_kinds_lists_every_kind_with_parameters(api: Api) -> None:
    resp = await api.client.get("/v2/kinds")
    assert resp.status == 200
    kinds = {k["name"]: k for k in await resp.json()}
    assert {"hello", "image.info"} <= set(kinds)
    hello = kinds["hello"]
    names = [p["name"] for p in hello["parameters"]]
    assert names == ["name", "url_callback", "url_errback"]
    assert hello["parameters"][0]["required"] is True
    assert {o["name"] for o in kinds["image.info"]["outputs"]} >= {"width", "exif_orientation"}


def test_readme_documents_every_kind_as_declared() -> None:
    assert markdown() in README.read_text(), "run scripts/kinds_doc"
    for name, kind in registry().items():
        if kind.run.__module__.startswith("tasks."):
            assert f"#### `{name}`" in README.read_text()


def test_parameter_checks() -> None:
    p = Param("n", INTEGER, min=1, max=10, choices=(1, 2, 10))
    assert p.check(2) == (2, None)
    assert p.check(2.0) == (2, None)
    assert p.check(True)[1] == "must be an integer"
    assert p.check("2")[1] == "must be an integer"
    assert p.check(3)[1] == "must be one of: 1, 2, 10"
    assert Param("n", INTEGER, min=1).check(0)[1] == "must be at least 1"


def test_readme_documents_every_setting() -> None:
    from server.config import settings

    text = README.read_text()
    for name, *_ in settings():
        assert f"`--{name.replace('_', '-')}`" in text, name

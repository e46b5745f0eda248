"""Callbacks and errbacks POSTed to a real local endpoint, with retries and signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import orjson
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from server.retry import RetrySchedule
from tests.conftest import SECRET, Api, Receiver


def assert_signed(headers: dict[str, str], body: bytes) -> None:
    """Checks the signature by hand and with a Standard Webhooks library."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest())
    assert headers["webhook-signature"] == "v1," + expected.decode()
    lowered = {k.lower(): v for k, v in headers.items()}
    assert Webhook(SECRET.encode()).verify(body, lowered) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another secret").verify(body, lowered)


async def test_callback_posts_the_final_status(api: Api, receiver: Receiver) -> None:
    (final,) = await api.create_ok(
        [{"task_name": "hello", "name": "cb", "url_callback": receiver.url()}], block=True
    )
    headers, body = await asyncio.wait_for(receiver.arrived.get(), 10)
    assert headers["Content-Type"] == "application/json"
    posted = orjson.loads(body)
    assert posted == final
    assert_signed(headers, body)


async def test_errback_on_failure_and_on_invalid_parameters(api: Api, receiver: Receiver) -> None:
    statuses = await api.create_ok(
        [
            {
                "task_name": "test.fail",
                "message": "boom",
                "url_errback": receiver.url("e1"),
                "url_callback": receiver.url("never"),
            },
            {"task_name": "hello", "url_errback": receiver.url("e2")},
        ],
        block=True,
    )
    got = [orjson.loads((await asyncio.wait_for(receiver.arrived.get(), 10))[1]) for _ in range(2)]
    by_key = {s["key"]: s for s in got}
    assert by_key[statuses[0]["key"]]["error"] == "boom"
    assert by_key[statuses[1]["key"]]["error"] == {
        "parameters": {"name": ["this field is required"]}
    }
    assert len(receiver.requests) == 2


async def test_failing_receiver_is_retried_with_the_same_id(api: Api, receiver: Receiver) -> None:
    receiver.fail_first = 2
    (final,) = await api.create_ok(
        [{"task_name": "hello", "name": "retry", "url_callback": receiver.url()}], block=True
    )
    await asyncio.wait_for(receiver.arrived.get(), 20)
    assert len(receiver.requests) == 3
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert len(ids) == 1 and next(iter(ids)).startswith("msg_")
    for headers, body in receiver.requests:
        assert orjson.loads(body) == final
        assert_signed(headers, body)
    for _ in range(100):
        _, (detailed,) = await api.status([final["key"]], details="true")
        if detailed["callbacks"][0]["state"] == "delivered":
            break
        await asyncio.sleep(0.05)
    (delivery,) = detailed["callbacks"]
    assert delivery["state"] == "delivered" and delivery["attempts"] == 3
    assert delivery["event"] == "callback" and delivery["url"] == receiver.url()
    assert detailed["status"] == "success"


async def test_unreachable_receiver_never_changes_the_status(api: Api) -> None:
    (final,) = await api.create_ok(
        [{"task_name": "hello", "name": "x", "url_callback": "http://127.0.0.1:9/hook"}],
        block=True,
    )
    assert final["status"] == "success"
    for _ in range(200):
        _, (detailed,) = await api.status([final["key"]], details="true")
        if detailed["callbacks"][0]["attempts"] >= 2:
            break
        await asyncio.sleep(0.05)
    delivery = detailed["callbacks"][0]
    assert delivery["attempts"] >= 2 and delivery["last_error"]
    assert detailed["status"] == "success"


def test_retry_schedule_is_exponential_and_ends() -> None:
    schedule = RetrySchedule()
    delays = [schedule.delay_after(n) for n in range(1, schedule.max_attempts)]
    assert delays == sorted(delays) and delays[0] == 5.0
    assert sum(delays) > 24 * 3600
    assert schedule.delay_after(schedule.max_attempts) is None
    assert RetrySchedule(scale=0.5).delay_after(1) == 2.5

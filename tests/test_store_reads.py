"""The store's grouped writes and shared reader under concurrency: reads see every committed
write even while other reads overlap, and closing the store commits what the writer holds.

SQLite keeps one read snapshot per connection for as long as any statement on it is unfinished.
When each query left its cursor open across an await, concurrent queries kept the reader's
snapshot old under load: `scripts/loadtest` got 404 for keys a create had just returned. The
race is timing-dependent; without the fix the first test fails in about half of its runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.statuses import Status, Task, new_key, now_iso
from server.store import Delivery, SqliteStore, new_delivery_id


def queued(account_id: int) -> Task:
    return Task(
        key=new_key(),
        account_id=account_id,
        task_name="hello",
        params={"name": "x"},
        task_store={"type": "persistent"},
        task_metas=None,
        status=Status.QUEUED,
        queued_at=now_iso(),
    )


async def test_a_committed_task_is_read_back_while_other_reads_overlap(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        account = await store.create_account("secret")
        old = [queued(account.id) for _ in range(200)]
        await store.insert_batch(old, [])
        stop = asyncio.Event()

        async def read_old() -> None:
            while not stop.is_set():
                await store.tasks(account.id, [t.key for t in old])

        readers = [asyncio.create_task(read_old()) for _ in range(8)]
        await asyncio.sleep(0.05)
        missed = 0
        for _ in range(60):
            new = queued(account.id)
            await store.insert_batch([new], [])
            missed += new.key not in await store.tasks(account.id, [new.key])
        stop.set()
        await asyncio.gather(*readers)
        assert missed == 0, f"{missed} of 60 committed tasks were not found right after"
    finally:
        await store.close()


async def test_close_commits_a_write_already_being_committed(tmp_path: Path) -> None:
    """A claim the writer has started to commit when the server stops still lands (the task's
    attempt count decides when an interrupted task stops being retried)."""
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    account = await store.create_account("secret")
    task = queued(account.id)
    await store.insert_batch([task], [])
    task.status, task.started_at, task.attempts = Status.EXECUTING, now_iso(), 1
    store.claim(task)
    await asyncio.sleep(0)  # the writer takes the claim and starts its transaction
    await store.close()

    reopened = SqliteStore(tmp_path / "store.sqlite3")
    await reopened.open()
    try:
        stored = (await reopened.tasks(account.id, [task.key]))[task.key]
        assert (stored.status, stored.attempts) == (Status.EXECUTING, 1)
    finally:
        await reopened.close()


async def test_a_task_that_ends_before_its_claim_is_written_keeps_its_start(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        account = await store.create_account("secret")
        quick, slow = queued(account.id), queued(account.id)
        await store.insert_batch([quick, slow], [])
        for task in (quick, slow):
            task.status, task.started_at, task.attempts = Status.EXECUTING, now_iso(), 1
            store.claim(task)
        # quick ends in the same turn of the loop, before the writer has taken its claim
        quick.status, quick.completed_at, quick.result = Status.SUCCESS, now_iso(), "Hello x"
        await store.finish([quick], [])
        stored = await store.tasks(account.id, [quick.key, slow.key])
        assert stored[quick.key].status is Status.SUCCESS
        assert stored[quick.key].started_at == quick.started_at
        assert stored[quick.key].attempts == 1
        assert stored[slow.key].status is Status.EXECUTING
        assert stored[slow.key].started_at == slow.started_at
        assert stored[slow.key].attempts == 1
    finally:
        await store.close()


async def test_batches_of_every_size_and_mix_are_committed_whole(tmp_path: Path) -> None:
    """A batch of task rows alone is one statement, up to a size; larger batches, and batches
    with other statements (the callbacks an error owes), take a transaction."""
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        account = await store.create_account("secret")
        small, large = [queued(account.id)], [queued(account.id) for _ in range(300)]
        failed = queued(account.id)
        failed.status, failed.completed_at, failed.error = Status.ERROR, now_iso(), "broken"
        owed = Delivery(
            id=new_delivery_id(),
            task_key=failed.key,
            account_id=account.id,
            event="errback",
            url="http://127.0.0.1:9/errback",
            body=b"{}",
            next_attempt=0.0,
        )
        await asyncio.gather(
            store.insert_batch(small, []),
            store.insert_batch(large, []),
            store.insert_batch([failed], [owed]),
        )
        everything = [*small, *large, failed]
        stored = await store.tasks(account.id, [t.key for t in everything])
        assert set(stored) == {t.key for t in everything}
        assert stored[failed.key].status is Status.ERROR
        assert [d.id for d in await store.due_deliveries(1.0, 10)] == [owed.id]
    finally:
        await store.close()

"""The `taskstream` command: `serve` runs the server, `accounts` manages accounts and API keys
in a data dir (safe while the server runs: it reads them from the store on every request)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from server.accesslog import AccessLogger
from server.auth import normalize_origin
from server.config import Config, settings
from server.store import SqliteStore

SECRET_FILE = "secret.txt"


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="Run the task server.")
    for name, kind, default, help_text in settings():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            shown = f" (default: {default})" if default is not None and name != "workers" else ""
            parser.add_argument(flag, type=kind, default=default, help=help_text + shown)


def _accounts_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("accounts", help="Manage accounts and API keys.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="The data dir.")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="Create an account and print its secret.")
    create.add_argument("--secret", help="Use this secret instead of a random one.")
    actions.add_parser("list", help="List accounts and their API keys.")
    add = actions.add_parser("add-key", help="Add an API key; prints it as the last line.")
    add.add_argument("--secret", required=True, help="Secret of the account.")
    add.add_argument(
        "--referrer",
        action="append",
        required=True,
        help="Allowed page origin, e.g. https://app.example (repeat for several).",
    )
    remove = actions.add_parser("remove-key", help="Remove an API key.")
    remove.add_argument("key")


async def _bootstrap(config: Config) -> None:
    """Makes sure the account of `--secret` exists; on a first start without one, creates an
    account with a random secret, saves it in the data dir and prints it once."""
    store = SqliteStore(config.db_path)
    await store.open()
    try:
        if config.secret:
            await store.create_account(config.secret)
        elif not await store.accounts():
            account = await store.create_account()
            path = config.data_dir / SECRET_FILE
            path.write_text(account.secret + "\n")
            path.chmod(0o600)
            print(f"Created an account. Its secret (saved in {path}): {account.secret}")
    finally:
        await store.close()


def serve(args: argparse.Namespace) -> None:
    values = {name: getattr(args, name) for name, *_ in settings()}
    config = Config(**values)
    # The data dir holds account secrets and the storage key: private to the server's user.
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    asyncio.run(_bootstrap(config))
    from server.app import create_app

    print(f"taskstream serving on http://{config.host}:{config.port}", flush=True)
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        access_log_class=AccessLogger,
        shutdown_timeout=10,
        loop=uvloop.new_event_loop(),
    )


async def _accounts(args: argparse.Namespace) -> int:
    store = SqliteStore(args.data_dir / "taskstream.sqlite3")
    await store.open()
    try:
        if args.action == "create":
            if args.secret and await store.account_by_secret(args.secret):
                print("an account with this secret exists already", file=sys.stderr)
                return 1
            account = await store.create_account(args.secret)
            print(account.secret)
        elif args.action == "list":
            for account, keys in await store.accounts():
                print(f"account {account.id} (created {account.created_at})")
                for key in keys:
                    print(f"  api key {key.key}  referrers: {', '.join(key.referrers) or '-'}")
        elif args.action == "add-key":
            account = await store.account_by_secret(args.secret)
            if account is None:
                print("no account has this secret", file=sys.stderr)
                return 1
            origins = [normalize_origin(r) for r in args.referrer]
            bad = [r for r, o in zip(args.referrer, origins, strict=True) if o is None]
            if bad:
                print(f"not an http(s) origin: {', '.join(bad)}", file=sys.stderr)
                return 2
            allowed = [o for o in origins if o]
            key = await store.add_api_key(account, allowed)
            print(f"API key for account {account.id}, referrers: {', '.join(allowed)}")
            print(key)
        elif args.action == "remove-key":
            if not await store.remove_api_key(args.key):
                print("no such API key", file=sys.stderr)
                return 1
            print("removed")
    finally:
        await store.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `taskstream` console script and of `python -m server`."""
    parser = argparse.ArgumentParser(prog="taskstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _accounts_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("TASKSTREAM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        serve(args)
    else:
        sys.exit(asyncio.run(_accounts(args)))

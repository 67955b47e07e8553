"""procrastinate 3.10's worker and psycopg_pool's pool, fixed where a database that goes away
(a restart, a failover, a flapping network) stopped or stalled them (see `pg.worker`)."""

from __future__ import annotations

import asyncio
from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg_pool
from procrastinate import worker as worker_module
from psycopg_pool.pool_async import AddConnection

CONNECT_TIMEOUT_S = 5
# The pool's reconnection backoff doubles without end; capped, it is back within this once the
# database is.
RECONNECT_MAX_S = 2.0


class Pool(psycopg_pool.AsyncConnectionPool[Any]):
    """procrastinate's pool, with its reconnection backoff capped, and every idle connection
    tested as soon as one fails its check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["check"] = self._check_all_if_dead
        super().__init__(*args, **kwargs)

    async def _check_all_if_dead(self, conn: Any) -> None:
        """A connection handed out is checked first; when it is dead, so is every other idle
        one after a cut (a restarted or flapping server). The pool's own check loop would then
        try them one by one with a doubling pause (1, 2, 4, 8 s…): a heartbeat waited 16 s
        through a flapping server. They are all tested now, so the next try gets a live or a
        new connection."""
        try:
            await self.check_connection(conn)
        except Exception:
            await self.check()
            raise

    async def schedule_task(self, task: Any, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_MAX_S)
        await super().schedule_task(task, delay)


class Connector(procrastinate.PsycopgConnector):
    async def listen_notify(self, on_notification: Any, channels: Any) -> None:
        """LISTEN until cancelled: a connect that fails is tried again (procrastinate's own
        gives up, and its side task with it), so no notification is missed for longer than the
        database is away (jobs are also polled meanwhile)."""
        while True:
            try:
                await super().listen_notify(on_notification, channels)
            except (procrastinate.exceptions.ConnectorException, OSError):
                await asyncio.sleep(RECONNECT_MAX_S)


class Worker(worker_module.Worker):
    async def _monitor_side_tasks(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        """Stop the worker when a side task fails — watching them all until they end (one
        returning, as the deferrer does at once without periodic tasks, ends no watch)."""
        pending = set(side_tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.stop()  # type: ignore[no-untyped-call]
                    return

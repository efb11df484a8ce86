"""quicswarm for asyncio: the operations of :class:`quicswarm.Client` and
:class:`quicswarm.Session`, awaited, and a :class:`Gateway` that serves from a coroutine.

Operations run on quicswarm's own threads and complete on your event loop; cancelling the
task that awaits one (``asyncio.wait_for``, ``task.cancel()``) cancels it on the gateway too::

    import asyncio, quicswarm.aio

    async def main(addr, fingerprint):
        async with await quicswarm.aio.connect(addr, fingerprint=fingerprint) as client:
            print(await client.call("echo", "hi"))
            async for ident, data in await client.stream("count", 10):
                ...
            summary = await client.download("logs", "backup", regex=r"\\.log$")
"""

import asyncio
import functools
from typing import Any, Optional

from . import Controller, Gateway as _Gateway, Session
from ._native import AsyncClient, AsyncItemIter, AsyncSession

__all__ = ["AsyncClient", "AsyncItemIter", "AsyncSession", "Gateway", "connect", "open_session"]


async def connect(addr: str, controller: Optional[Controller] = None, **trust: Any) -> AsyncClient:
    """An :class:`AsyncClient` of the gateway at ``addr``; ``trust`` as for
    :class:`quicswarm.Controller` (``fingerprint=``, ``ca=``, ``known_gateways=``...)."""
    controller = controller or Controller(**trust)
    loop = asyncio.get_running_loop()
    client = await loop.run_in_executor(None, controller.get_client, addr)
    return AsyncClient(client)


async def open_session(addr: str, controller: Optional[Controller] = None,
                       max_attempts: Optional[int] = None, **trust: Any) -> AsyncSession:
    """An :class:`AsyncSession` of the gateway at ``addr``, reconnecting by itself."""
    controller = controller or Controller(**trust)
    loop = asyncio.get_running_loop()
    session = await loop.run_in_executor(None, Session, controller, addr, max_attempts)
    return AsyncSession(session)


class Gateway(_Gateway):
    """:class:`quicswarm.Gateway`, with ``await gw.serve()`` and ``async with``. Its
    subroutines still run on threads of their own, never on the event loop."""

    async def serve(self) -> None:
        """Serves until the gateway is closed; cancelling the awaiting task closes it."""
        self.start()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, functools.partial(self.start, blocking=True))
        finally:
            await loop.run_in_executor(None, self.close)

    async def __aenter__(self) -> "Gateway":
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
        return False


def _deliver(future: "asyncio.Future[Any]", setter: str, value: Any) -> None:
    """Completes ``future`` on its loop, unless it was cancelled meanwhile."""
    if not future.done():
        getattr(future, setter)(value)


def _progress(callback: Any, future: "asyncio.Future[Any]", progress: dict) -> None:
    """Runs a transfer's progress callback on the loop; an exception from it fails (and so
    cancels) the transfer."""
    if future.done():
        return
    try:
        callback(progress)
    except BaseException as e:  # noqa: BLE001 - raised where the transfer is awaited
        future.set_exception(e)

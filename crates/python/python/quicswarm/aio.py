"""quicswarm for asyncio: the same operations as :class:`quicswarm.Client`, awaited.

Operations run on quicswarm's own threads and complete on your event loop; cancelling the
task that awaits one (``asyncio.wait_for``, ``task.cancel()``) cancels it on the gateway too::

    import asyncio, quicswarm.aio

    async def main(addr, fingerprint):
        client = await quicswarm.aio.connect(addr, fingerprint=fingerprint)
        print(await client.call("echo", "hi"))
        async for ident, data in await client.stream("count", 10):
            ...
        await client.close()
"""

import asyncio
from typing import Any, Optional

from . import Controller
from ._native import AsyncClient, AsyncItemIter

__all__ = ["AsyncClient", "AsyncItemIter", "connect"]


async def connect(addr: str, controller: Optional[Controller] = None, **trust: Any) -> AsyncClient:
    """An :class:`AsyncClient` of the gateway at ``addr``; ``trust`` as for
    :class:`quicswarm.Controller` (``fingerprint=``, ``ca=``, ``known_gateways=``...)."""
    controller = controller or Controller(**trust)
    loop = asyncio.get_running_loop()
    client = await loop.run_in_executor(None, controller.get_client, addr)
    return AsyncClient(client)


def _deliver(future: "asyncio.Future[Any]", setter: str, value: Any) -> None:
    """Completes ``future`` on its loop, unless it was cancelled meanwhile."""
    if not future.done():
        getattr(future, setter)(value)

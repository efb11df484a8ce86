from os import PathLike
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple, Union

from . import Client, Controller, Gateway as _Gateway, Session

_Path = Union[str, "PathLike[str]"]
_Progress = Optional[Callable[[Dict[str, Any]], Any]]

class AsyncClient:
    """A client whose operations are awaited; cancelling one cancels it on the gateway."""

    def __init__(self, client: Client) -> None: ...
    async def ping(self) -> float: ...
    async def call(
        self, name: str, *args: Any, hedge_after: Optional[float] = None, **kwargs: Any
    ) -> bytes: ...
    async def send(self, name: str, buffer: Any, *args: Any, **kwargs: Any) -> int: ...
    async def stream(self, name: str, *args: Any, **kwargs: Any) -> "AsyncItemIter": ...
    async def subscribe(
        self,
        name: str,
        *args: Any,
        delivery: str = "reliable",
        max_age: Optional[float] = None,
        priority: int = 0,
        deliver_late: bool = False,
        fec_percent: Optional[int] = None,
        **kwargs: Any,
    ) -> "AsyncItemIter": ...
    async def list(
        self,
        root: str,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[List[str]] = None,
        recursive: bool = True,
        hash: bool = False,
    ) -> List[Dict[str, Any]]: ...
    async def download(
        self,
        root: str,
        dest: _Path,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[List[str]] = None,
        recursive: bool = True,
        swarm: int = 4,
        progress: _Progress = None,
    ) -> Dict[str, Any]:
        """`progress(dict)` runs on the event loop; an exception from it cancels the download."""
    async def upload(
        self, paths: List[_Path], dest: str = "", swarm: int = 4, progress: _Progress = None
    ) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, Any]: ...
    async def close_gateway(self) -> None: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> "AsyncClient": ...
    async def __aexit__(self, *exc: Any) -> None: ...

class AsyncSession:
    """A session whose operations are awaited; it reconnects by itself."""

    def __init__(self, session: Session) -> None: ...
    @property
    def state(self) -> str:
        """"connected", "reconnecting" or "closed"."""
    @property
    def reconnects(self) -> int: ...
    async def wait_state_change(self, timeout: float = 30.0) -> str: ...
    async def wait_for(self, state: str, timeout: float = 30.0) -> bool: ...
    async def call(
        self, name: str, *args: Any, hedge_after: Optional[float] = None, **kwargs: Any
    ) -> bytes: ...
    async def subscribe(
        self,
        name: str,
        *args: Any,
        delivery: str = "reliable",
        max_age: Optional[float] = None,
        priority: int = 0,
        deliver_late: bool = False,
        fec_percent: Optional[int] = None,
        **kwargs: Any,
    ) -> "AsyncItemIter": ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> "AsyncSession": ...
    async def __aexit__(self, *exc: Any) -> None: ...

class AsyncItemIter(AsyncIterator[Tuple[int, bytes]]):
    def __aiter__(self) -> "AsyncItemIter": ...
    async def __anext__(self) -> Tuple[int, bytes]: ...
    async def aclose(self) -> None: ...

class Gateway(_Gateway):
    """quicswarm.Gateway with `await gw.serve()` and `async with`."""

    async def serve(self) -> None: ...
    async def __aenter__(self) -> "Gateway": ...
    async def __aexit__(self, *exc: Any) -> bool: ...

async def connect(addr: str, controller: Optional[Controller] = None, **trust: Any) -> AsyncClient: ...
async def open_session(
    addr: str, controller: Optional[Controller] = None, max_attempts: Optional[int] = None, **trust: Any
) -> AsyncSession: ...

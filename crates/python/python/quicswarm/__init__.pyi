from os import PathLike
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, overload

from .errors import *  # noqa: F401,F403

_Path = Union[str, "PathLike[str]"]
_Buffer = Union[bytes, bytearray, memoryview, Any]

class Gateway:
    """A server of subroutines and files on one UDP port."""

    def __init__(
        self,
        listen: str = "0.0.0.0:1857",
        pool_size: int = 5,
        cert_dir: _Path = "certs",
        serve: Optional[Mapping[str, _Path]] = None,
        upload_dir: Optional[_Path] = None,
        allow_close: bool = False,
        client_ca: Optional[_Path] = None,
        metrics: Optional[str] = None,
    ) -> None:
        """`metrics="127.0.0.1:9464"` serves Prometheus metrics on http://ADDR/metrics."""
    def add_subroutine(
        self,
        name: str,
        fn: Callable[..., Any],
        kind: Optional[str] = None,
        replay_safe: bool = False,
    ) -> None:
        """A generator function becomes a stream subroutine, any other callable a batch one.
        `replay_safe=True`: running it twice does no harm (0-RTT, hedged calls)."""
    def add_sink(self, name: str, fn: Callable[..., Optional[int]]) -> None:
        """`fn(*args, buffer=bytes, **kwargs)` returns an int (None counts as 0)."""
    def serve(self, name: str, dir: _Path) -> None: ...
    def start(self, blocking: bool = False) -> None: ...
    def close(self) -> None: ...
    def reload(self) -> str:
        """Re-reads cert_dir and the client_ca file; returns the fingerprint now served."""
    @property
    def fingerprint(self) -> str: ...
    @property
    def local_addr(self) -> str: ...
    @property
    def metrics_addr(self) -> Optional[str]: ...
    def metrics(self) -> str:
        """The metrics now, in the Prometheus text format."""
    def __enter__(self) -> "Gateway": ...
    def __exit__(self, *exc: Any) -> bool: ...

class Controller:
    """One endpoint reaching any number of gateways."""

    def __init__(
        self,
        known_gateways: Optional[_Path] = None,
        ca: Optional[_Path] = None,
        fingerprint: Optional[str] = None,
        cert: Optional[_Path] = None,
        key: Optional[_Path] = None,
        timeout: float = 30.0,
    ) -> None:
        """`timeout=` seconds to connect, and for a call to be answered. File listings and
        downloads must keep moving within it, however long they take in all."""
    def get_client(self, addr: str) -> "Client": ...

class Client:
    """One connection to a gateway; every operation is its own QUIC stream."""

    def ping(self) -> float: ...
    def call(
        self, name: str, *args: Any, hedge_after: Optional[float] = None, **kwargs: Any
    ) -> bytes:
        """`hedge_after=` seconds: a replay-safe call is sent again if unanswered by then."""
    @overload
    def stream(self, name: str, *args: Any, **kwargs: Any) -> "ItemIter": ...
    @overload
    def stream(
        self,
        name: str,
        *args: Any,
        callback: Callable[[str, int, bytes], Optional[bool]],
        eos_callback: Optional[Callable[[str], Any]] = None,
        **kwargs: Any,
    ) -> int: ...
    def subscribe(
        self,
        name: str,
        *args: Any,
        delivery: str = "reliable",
        max_age: Optional[float] = None,
        priority: int = 0,
        deliver_late: bool = False,
        fec_percent: Optional[int] = None,
        **kwargs: Any,
    ) -> "ItemIter": ...
    def list(
        self,
        root: str,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[List[str]] = None,
        recursive: bool = True,
        hash: bool = False,
    ) -> List[Dict[str, Any]]: ...
    def download(
        self,
        root: str,
        dest: _Path,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[List[str]] = None,
        recursive: bool = True,
        swarm: int = 4,
        progress: Optional[Callable[[Dict[str, Any]], Any]] = None,
    ) -> Dict[str, Any]: ...
    def upload(
        self,
        paths: List[_Path],
        dest: str = "",
        swarm: int = 4,
        progress: Optional[Callable[[Dict[str, Any]], Any]] = None,
    ) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, Any]: ...
    def close_gateway(self) -> None: ...
    def send(self, name: str, buffer: _Buffer, *args: Any, **kwargs: Any) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Client": ...
    def __exit__(self, *exc: Any) -> bool: ...

class ItemIter(Iterator[Tuple[int, bytes]]):
    """The items of a stream; leaving the loop early aborts the stream on the gateway."""

    def __iter__(self) -> "ItemIter": ...
    def __next__(self) -> Tuple[int, bytes]: ...
    def close(self) -> None: ...

class FleetResult:
    """One gateway's part of a fleet operation."""

    gateway: str
    addr: str
    ok: bool
    value: Any
    """The round trip (seconds), bytes, int, listing or summary dict; None on failure."""
    error: Optional[BaseException]
    """The exception the gateway's part would have raised (e.g. quicswarm.Timeout)."""
    seconds: float

class FleetResults(Iterator[FleetResult]):
    """Each gateway's result as it finishes; leaving the loop stops the rest."""

    def __iter__(self) -> "FleetResults": ...
    def __next__(self) -> FleetResult: ...
    def close(self) -> None: ...

class Fleet:
    """One operation on every gateway of a fleet file, through one controller."""

    def __init__(
        self,
        path: Optional[_Path] = None,
        members: Optional[Sequence[Tuple[str, ...]]] = None,
        controller: Optional[Controller] = None,
        concurrency: int = 64,
        timeout: Optional[float] = None,
        swarm: int = 1,
    ) -> None: ...
    @property
    def members(self) -> List[Tuple[str, str, Optional[str]]]: ...
    def ping(self) -> FleetResults: ...
    def call(self, name: str, *args: Any, **kwargs: Any) -> FleetResults: ...
    def send(self, name: str, buffer: _Buffer, *args: Any, **kwargs: Any) -> FleetResults: ...
    def list(
        self,
        root: str,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[Sequence[str]] = None,
        recursive: bool = True,
    ) -> FleetResults: ...
    def download(
        self,
        root: str,
        dest: _Path,
        glob: Optional[str] = None,
        regex: Optional[str] = None,
        paths: Optional[Sequence[str]] = None,
        recursive: bool = True,
    ) -> FleetResults: ...
    def upload(self, paths: Sequence[_Path], dest: str = "") -> FleetResults: ...
    def __len__(self) -> int: ...

class Session:
    """A client that reconnects by itself; subscriptions resume after the last item."""

    def __init__(self, controller: Controller, addr: str, max_attempts: Optional[int] = None) -> None: ...
    @property
    def state(self) -> str:
        """"connected", "reconnecting" or "closed"."""
    @property
    def reconnects(self) -> int: ...
    def wait_state_change(self, timeout: float = 30.0) -> str: ...
    def wait_for(self, state: str, timeout: float = 30.0) -> bool: ...
    def call(
        self, name: str, *args: Any, hedge_after: Optional[float] = None, **kwargs: Any
    ) -> bytes: ...
    def subscribe(
        self,
        name: str,
        *args: Any,
        delivery: str = "reliable",
        max_age: Optional[float] = None,
        priority: int = 0,
        deliver_late: bool = False,
        fec_percent: Optional[int] = None,
        **kwargs: Any,
    ) -> ItemIter: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Session": ...
    def __exit__(self, *exc: Any) -> bool: ...

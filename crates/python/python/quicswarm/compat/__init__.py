"""pynetwork's names and arguments on top of quicswarm, for code written for pynetwork 2.4.

Change the import lines (``from quicswarm.compat import Gateway, Controller``) and, on the
gateway, serve the folders clients will name: pynetwork served the whole disk, quicswarm serves
only what it is told (``gw.serve(folder)``). Everything else keeps its pynetwork name:

- gateway: ``Gateway(port, max_poolsize=5, download_dir='')``, ``add_subroutine(name, fn)``,
  ``serve(folder)``, ``start(blocking=False)``, ``stop()``;
- controller: ``Controller(gateway_ip='', port=1857, download_dir='', verbose=False)``,
  ``get_client()``, ``close_gateway()``;
- client: ``ping(message)``, ``get_subroutine_batch(name, arguments=[], **kwargs)``,
  ``get_subroutine_stream(name, callback, eos_callback=None, arguments=[], **kwargs)``,
  ``send_subroutine_batch(name, buffer, arguments=[], **kwargs)``,
  ``get_files_from_gateway(regex='', files=[], folder='')``,
  ``send_files_to_gateway(dirname='', files=[])``, ``close_handler()``, ``close_gateway()``,
  and ``with``.

What differs, on purpose: connections are QUIC with TLS 1.3, and the gateway's certificate is
pinned on first use (``~/.config/quicswarm/known_gateways``); a changed certificate is an
error. Files arrive verified and atomically. A regex selects among the files below the
folder by their path relative to it (pynetwork matched the start of the joined path).
"""

import os
import pathlib
from typing import Any, Callable, List, Optional

import quicswarm

from . import backend2  # noqa: F401  (pynetwork.backend2's helpers)

__all__ = ["Gateway", "Controller", "Client", "backend2"]

# A pynetwork function can be called as a batch and fed a buffer: quicswarm gives each name
# one kind, so the sink side is registered under this suffix.
_SINK_SUFFIX = "#send"


class Gateway:
    """pynetwork's ``Gateway`` on quicswarm: QUIC on UDP ``port`` (all interfaces)."""

    def __init__(self, port: int, max_poolsize: int = 5, download_dir: str = "",
                 cert_dir: str = "certs"):
        self.port = port
        self.download_dir = download_dir or "Downloads"
        self._folders = {}
        self._subroutines = {}
        self._max_poolsize = max_poolsize
        self._cert_dir = cert_dir
        self._gateway: Optional[quicswarm.Gateway] = None

    def add_subroutine(self, name: str, subroutine: Callable[..., Any]) -> None:
        """Registers ``subroutine`` for streams (a generator function), batches and sends."""
        if not callable(subroutine):
            raise TypeError("Invalid argument provided instead of a subroutine")
        self._subroutines[name] = subroutine
        if self._gateway is not None:
            self._register(self._gateway, name, subroutine)

    def serve(self, folder: str) -> None:
        """Lets clients download from ``folder`` (named by the same path on their side)."""
        self._folders[_root_name(folder)] = folder

    def start(self, blocking: bool = False) -> None:
        gateway = quicswarm.Gateway(
            listen=f"0.0.0.0:{self.port}",
            pool_size=self._max_poolsize,
            cert_dir=self._cert_dir,
            serve=self._folders,
            upload_dir=self.download_dir,
            # pynetwork's clients could always close the gateway.
            allow_close=True,
        )
        for name, subroutine in self._subroutines.items():
            self._register(gateway, name, subroutine)
        gateway.start()
        self._gateway = gateway
        backend2.safe_print("Gateway Started..")
        backend2.safe_print("certificate fingerprint", gateway.fingerprint)
        if blocking:
            gateway.start(blocking=True)

    def stop(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None
            backend2.safe_print("Gateway stopped")

    @property
    def fingerprint(self) -> str:
        return self._require().fingerprint

    @property
    def local_addr(self) -> str:
        return self._require().local_addr

    def _require(self) -> quicswarm.Gateway:
        if self._gateway is None:
            raise RuntimeError("the gateway is not started")
        return self._gateway

    @staticmethod
    def _register(gateway: "quicswarm.Gateway", name: str, subroutine: Callable[..., Any]) -> None:
        gateway.add_subroutine(name, subroutine)
        gateway.add_sink(name + _SINK_SUFFIX, _pynetwork_sink(subroutine))


def _pynetwork_sink(subroutine: Callable[..., Any]) -> Callable[..., int]:
    """pynetwork passed the buffer as ``buffer=`` (when not empty) and sent 0 for a result
    that is not an int."""

    def sink(*args, buffer=b"", **kwargs):
        if buffer:
            kwargs["buffer"] = buffer
        result = subroutine(*args, **kwargs)
        return result if isinstance(result, int) and not isinstance(result, bool) else 0

    return sink


def _root_name(folder: str) -> str:
    return os.path.normpath(folder)


class Controller:
    """pynetwork's ``Controller``: reaches the gateway at ``gateway_ip:port``."""

    def __init__(self, gateway_ip: str = "", port: int = 1857, download_dir: str = "",
                 verbose: bool = False, known_gateways: Optional[str] = None,
                 fingerprint: Optional[str] = None):
        self.gateway_ip = gateway_ip or "127.0.0.1"
        self.port = port
        self.download_dir = download_dir or "Downloads"
        os.makedirs(self.download_dir, exist_ok=True)
        self.verbose = verbose
        self._controller = quicswarm.Controller(known_gateways=known_gateways, fingerprint=fingerprint)

    def get_client(self) -> "Client":
        host = self.gateway_ip
        addr = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        return Client(self._controller.get_client(addr), self.download_dir, self.verbose)

    def close_gateway(self) -> None:
        self.get_client().close_gateway()


class Client:
    """pynetwork's ``Client``, one handler of the gateway."""

    def __init__(self, client: "quicswarm.Client", download_dir: str, verbose: bool):
        self._client = client
        self.download_dir = download_dir
        self.verbose = verbose
        self.connected = True

    def ping(self, message: str = "ping") -> float:
        rtt = self._client.ping()
        if self.verbose:
            backend2.safe_print("Response from Handler:", message, f"({rtt * 1e3:.2f} ms)")
        return rtt

    def get_subroutine_batch(self, name: str, arguments: List[Any] = [], **kwargs) -> bytes:  # noqa: B006
        return self._client.call(name, *arguments, **kwargs)

    def get_subroutine_stream(self, name: str, callback: Callable[[str, int, bytes], Any],
                              eos_callback: Optional[Callable[[str], Any]] = None,
                              arguments: List[Any] = [], **kwargs) -> None:  # noqa: B006
        self._client.stream(name, *arguments, callback=callback, eos_callback=eos_callback, **kwargs)

    def send_subroutine_batch(self, name: str = "", buffer: Any = None,
                              arguments: List[Any] = [], **kwargs) -> int:  # noqa: B006
        return self._client.send(name + _SINK_SUFFIX, buffer or b"", *arguments, **kwargs)

    def get_files_from_gateway(self, regex: str = "", files: List[str] = [],  # noqa: B006
                               folder: str = "") -> dict:
        """Downloads into the controller's ``download_dir``: the files of ``folder`` (matching
        ``regex``), or the listed ``files`` (each from the served folder holding it)."""
        if not regex and not files and not folder:
            raise ValueError("Either regex, file list & folder needs to provided")
        try:
            if folder:
                summary = self._client.download(_root_name(folder), self.download_dir,
                                                regex=regex or None, recursive=False)
            else:
                summary = {"files": 0}
                for path in files:
                    parent, name = os.path.split(os.path.normpath(path))
                    got = self._client.download(_root_name(parent or "."), self.download_dir,
                                                paths=[name])
                    summary["files"] += got["files"]
        except quicswarm.Error as e:
            if e.code == 17 and "root" in str(e):
                raise quicswarm.Error(
                    f"{e} — the gateway serves only the folders it is told: add "
                    f"gw.serve({folder or os.path.dirname(files[0])!r}) before gw.start()",
                    code=e.code,
                ) from e
            raise
        if self.verbose:
            backend2.safe_print("Files are downloaded")
        return summary

    def send_files_to_gateway(self, dirname: str = "", files: List[str] = []) -> dict:  # noqa: B006
        if not files:
            raise ValueError("Cannot transfer files using empty list")
        summary = self._client.upload([pathlib.Path(f) for f in files], dest=dirname)
        if self.verbose:
            backend2.safe_print("Files sent to gateway.")
        return summary

    def close_handler(self) -> None:
        if self.connected:
            self.connected = False
            self._client.close()

    def close_gateway(self) -> None:
        self._client.close_gateway()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> bool:
        self.close_handler()
        return False

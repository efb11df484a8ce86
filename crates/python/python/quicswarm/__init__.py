"""quicswarm: a swarm of encrypted QUIC connections for your network workloads.

A :class:`Gateway` serves Python functions as *subroutines*; a :class:`Controller` reaches
gateways and hands out :class:`Client` objects, one QUIC connection each::

    import quicswarm

    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir="certs")
    gw.add_subroutine("echo", lambda text: text)
    gw.start()

    controller = quicswarm.Controller(fingerprint=gw.fingerprint)
    with controller.get_client(gw.local_addr) as client:
        assert client.call("echo", "hi") == b"hi"
"""

from ._native import Client, Controller, Fleet, FleetResult, FleetResults, Gateway, ItemIter, Session
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors

__all__ = [
    "Gateway",
    "Controller",
    "Client",
    "ItemIter",
    "Session",
    "Fleet",
    "FleetResult",
    "FleetResults",
    *_errors,
]

"""A client for junctiond: JSON-RPC 2.0 and MCP1 over its Unix socket or TCP.

Blocking::

    import junction
    with junction.connect() as client:          # the default Unix socket
        print(client.call("rpc.echo", [1, 2]))  # [1, 2]

asyncio: ``client = await junction.aio.connect()``, the same methods awaited.
Both provide methods on the service bus, subscribe and publish, and connect
again after the daemon restarts. Standard library only.
"""

from . import aio, errors
from .aio import AsyncClient, AsyncSubscription, Call, Event, Notification
from .endpoint import default_socket_path, find_token_file, read_token
from .errors import *  # noqa: F401,F403  (one class per error code)
from .errors import CallTimeout, ConnectionLost, JunctionError, ProtocolError, RpcError
from .sync import Client, Subscription, connect

__version__ = "0.1.0"

__all__ = [
    "aio",
    "errors",
    "connect",
    "Client",
    "Subscription",
    "AsyncClient",
    "AsyncSubscription",
    "Call",
    "Event",
    "Notification",
    "default_socket_path",
    "find_token_file",
    "read_token",
    "JunctionError",
    "RpcError",
    "ConnectionLost",
    "ProtocolError",
    "CallTimeout",
] + [name for name in errors.__all__ if name not in ("JunctionError", "RpcError", "ConnectionLost", "ProtocolError", "CallTimeout", "ERROR_CLASSES")]

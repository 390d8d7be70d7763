"""Is a Ray cluster at this address? Answer within seconds, saying what answered if not Ray.

Ray itself retries a wrong address for minutes, and hangs on a listener that speaks another
protocol. Here: a TCP connection, then the HTTP/2 preface every gRPC server answers with a
SETTINGS frame, then (for a GCS address) one ``GetClusterId`` call that only a Ray GCS implements.
"""

from __future__ import annotations

import os
import socket
import time

from core.errors import UserError

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``ray://HOST:PORT`` or ``[v6]:PORT`` -> (host, port); UserError otherwise."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address: expected HOST:PORT or ray://HOST:PORT, got '{address}'")
    return host, int(port)


def _connect(host: str, port: int, address: str, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except socket.gaierror as err:
            raise UserError(f"--address: cannot resolve host '{host}' ({err.strerror or err})") from None
        except OSError as err:
            if time.monotonic() + 0.5 >= deadline:
                raise UserError(
                    f"--address: nothing answers at '{address}' ({err.strerror or err}); "
                    "start the cluster or fix the address"
                ) from None
            time.sleep(0.5)


def _describe(reply: bytes) -> str:
    if reply.startswith(b"HTTP/"):
        line = reply.split(b"\r\n", 1)[0].decode("latin-1")
        return f"an HTTP/1 server answered ('{line[:80]}'), not Ray"
    if reply.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "an HTTP/1 server answered (an HTML page), not Ray"
    text = reply[:60].decode("latin-1")
    printable = "".join(c if c.isprintable() else "." for c in text)
    return f"something that is not Ray answered ({len(reply)} bytes: '{printable}')"


def _speaks_grpc(host: str, port: int, address: str, deadline: float) -> None:
    with _connect(host, port, address, deadline) as sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.sendall(_PREFACE)
            reply = sock.recv(64)
        except TimeoutError:
            raise UserError(
                f"--address: something at '{address}' accepted the connection but said nothing (not a Ray cluster)"
            ) from None
        except OSError as err:
            raise UserError(
                f"--address: the connection to '{address}' failed ({err.strerror or err}); not a Ray cluster"
            ) from None
    if not reply:
        raise UserError(
            f"--address: something at '{address}' closed the connection without a reply (not a Ray cluster)"
        )
    if len(reply) < 9 or reply[3] != _SETTINGS:
        raise UserError(f"--address: at '{address}' {_describe(reply)}")


def _is_gcs(address: str, host: str, port: int, timeout_s: float) -> None:
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    deadline = time.monotonic() + timeout_s  # after the imports, which a loaded host may take seconds over

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=max(0.1, deadline - time.monotonic()))
        except grpc.RpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return  # a Ray GCS that wants a token: ray.init brings it
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise UserError(f"--address: a gRPC server that is not a Ray GCS answered at '{address}'") from None
            raise UserError(f"--address: no Ray GCS answers at '{address}' (gRPC {code.name})") from None


def check_ray_address(address: str, timeout_s: float = 2.0) -> None:
    """Return when a Ray GCS (or, for ``ray://``, a gRPC server) answers at ``address``; else UserError.

    Args:
      address: ``HOST:PORT`` of a GCS, or ``ray://HOST:PORT`` of a Ray Client server.
      timeout_s: the budget, in seconds, of each step (connect and handshake, then the GCS call); a port
        that refuses is retried until then.
    """
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    _speaks_grpc(host, port, address, deadline)
    if not address.startswith("ray://"):
        _is_gcs(address, host, port, timeout_s)


def loopback_only() -> None:
    """Make a Ray instance this process starts listen on 127.0.0.1 only (GCS, raylet, agents, workers).

    Ray binds its servers to the node's IP, which it takes to be the host's outward address unless
    clusters are off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own default on macOS and
    Windows); then it is the loopback address. Call before ``ray.init`` of an embedded instance only:
    a driver joining a cluster needs its outward address.
    """
    import ray._private.ray_constants as constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants.ENABLE_RAY_CLUSTER = False

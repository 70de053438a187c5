"""Who may reach a simulator replica: loopback by default, a bearer token, TLS.

A replica binds loopback unless told `--allow-remote`. With a token (`--auth-token`, or the MTR_SIMULATOR_TOKEN
environment variable, which keeps it out of `ps`), every SimulatorService call must carry the metadata
`authorization: Bearer <token>` or gets UNAUTHENTICATED; the health service stays open so that orchestrators
and load balancers can probe without the secret. `--tls-cert/--tls-key` serve TLS.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

import grpc

TOKEN_ENV = "MTR_SIMULATOR_TOKEN"
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(flag_value: str | None) -> str | None:
    """The token from the command line, else from the environment; None (no authentication) if neither is set."""
    token = flag_value if flag_value is not None else os.environ.get(TOKEN_ENV)
    return token or None


def server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; raise ValueError naming the file that cannot be read."""
    pems = []
    for what, path in (("certificate", cert_file), ("private key", key_file)):
        try:
            pems.append(Path(path).read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read the TLS {what} {path}: {exc}") from exc
    certificate, key = pems
    _check_pem_pair(Path(cert_file), Path(key_file))
    return grpc.ssl_server_credentials([(key, certificate)])


def _check_pem_pair(cert_file: Path, key_file: Path) -> None:
    """gRPC only says it cannot bind the port when the PEMs are bad; check them here and say what is wrong."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ValueError(
            f"TLS certificate {cert_file} and key {key_file} are not a usable PEM pair ({exc.reason or exc})"
        ) from None


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>`, except the open (health) methods."""

    def __init__(self, token: str, on_refused=None) -> None:
        """`on_refused(method)` is told of every refused call (the replica counts them in its metrics)."""
        if not token:
            raise ValueError("the simulator's auth token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._refuse = grpc.unary_unary_rpc_method_handler(_unauthenticated)
        self._on_refused = on_refused

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES) or self._authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        if self._on_refused is not None:
            self._on_refused(method)
        return self._refuse

    def _authorized(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(presented, self._expected)
        return False


async def _unauthenticated(request: object, context: grpc.aio.ServicerContext) -> None:
    # Never echo what was presented: a near-miss token in an error message is a leaked token.
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "this simulator requires the metadata 'authorization: Bearer <token>' (the MTR_SIMULATOR_TOKEN it was "
        "started with); the call had none or a different one",
    )

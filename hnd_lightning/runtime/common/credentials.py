"""Credentials both sides load the same way: the bearer token, certificate files, and what counts as loopback.

The token comes from a file (`auth.token_file`) or an environment variable (`auth.token_env`, by
default `HND_SERVE_TOKEN`), never from a command-line value, which every user of the machine sees in
the process list. Certificates and keys are PEM files; `ClientTls` turns a client's into an
`ssl.SSLContext` (REST) or gRPC channel credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKEN_ENV = "HND_SERVE_TOKEN"
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: a token must fit an HTTP header and gRPC metadata
MIN_TOKEN_CHARS = 16
INLINE_TOKEN_REFUSED = (
    "auth.token is refused: a value on the command line (or in a config file) shows in the process list "
    "and the run's saved config. Put the token in a file only you can read and pass auth.token_file=PATH, "
    "or export it in the environment variable named by auth.token_env (default HND_SERVE_TOKEN); "
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) only reaches this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def load_token(token_file: str | None, token_env: str | None, inline: Any = None) -> str | None:
    """The bearer token from `token_file` (first) or the environment variable `token_env`; None if neither is set.

    Raises ValueError for an inline value (`auth.token`), an empty or unreadable file, or a token with
    characters an HTTP header cannot carry.
    """
    if inline not in (None, ""):
        raise ValueError(INLINE_TOKEN_REFUSED)
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise ValueError(f"auth.token_file={token_file!r} is not a file; write the token into it (one line).")
        if path.stat().st_mode & 0o077:
            log.warning("auth.token_file %s is readable by other users; chmod 600 it", path)
        token, source = path.read_text().strip(), f"auth.token_file={token_file!r}"
    elif token_env and os.environ.get(token_env):
        token, source = os.environ[token_env].strip(), f"the environment variable {token_env}"
    else:
        return None
    if not TOKEN_PATTERN.fullmatch(token):
        raise ValueError(
            f"the token in {source} is empty or holds spaces or non-ASCII characters; use visible ASCII only, "
            'e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    if len(token) < MIN_TOKEN_CHARS:
        log.warning("the token in %s has only %d characters; use %d or more", source, len(token), MIN_TOKEN_CHARS)
    return token


def check_pem_files(**files: str | None) -> None:
    """Raise ValueError naming each setting (`tls.cert=...`) whose file does not exist."""
    missing = [f"{name}={path!r}" for name, path in files.items() if path and not Path(path).expanduser().is_file()]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)}; pass the PEM files' paths.")


def _read(path: str | None) -> bytes | None:
    return Path(path).expanduser().read_bytes() if path else None


@dataclass(frozen=True)
class ClientTls:
    """What a TLS client trusts (`ca`: the CA that signed the server's certificate; None: the system's CAs)
    and, for servers that require one (mutual TLS), its own `cert` and `key`."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError(
                f"tls.cert={self.cert!r} and tls.key={self.key!r}: a client certificate needs its key; set both or neither."
            )
        check_pem_files(**{"tls.ca": self.ca, "tls.cert": self.cert, "tls.key": self.key})

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (host name and chain checked) for HTTPS."""
        context = ssl.create_default_context(cafile=str(Path(self.ca).expanduser()) if self.ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            context.load_cert_chain(str(Path(self.cert).expanduser()), str(Path(self.key).expanduser()))
        return context

    def grpc_credentials(self) -> Any:
        """`grpc.ChannelCredentials` for a `grpc.secure_channel`."""
        import grpc

        return grpc.ssl_channel_credentials(_read(self.ca), _read(self.key), _read(self.cert))


def client_credentials(tls: Any, auth: Any) -> tuple[ClientTls | None, str | None]:
    """A client's `tls.*` (ca, cert, key) and `auth.*` (token_file, token_env, token) settings ->
    (ClientTls or None when none is set, token or None)."""
    files = {name: tls.get(name) for name in ("ca", "cert", "key")}
    client_tls = ClientTls(**files) if any(files.values()) else None
    return client_tls, load_token(auth.get("token_file"), auth.get("token_env"), auth.get("token"))

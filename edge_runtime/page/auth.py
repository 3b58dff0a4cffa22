"""The token every state change on the page needs (`Authorization: Bearer <token>`).

The page itself is open to read on the station's own address (localhost by default); changing
the line — a threshold, a rollback, a relabel — needs the token. It lives in a file made at the
first start with mode 0600 (default `~/.config/twinspect/token`, or `$XDG_CONFIG_HOME`;
`--token-file` to choose), so whoever can read it is whoever may sign off: the service account
and root. A token file others can read is refused, as ssh refuses a private key: a secret that
was world-readable cannot be trusted to say who made a change.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from edge_runtime.errors import BadInput


class Unauthorized(BadInput):
    """No token sent (HTTP 401)."""


class Forbidden(BadInput):
    """A token that is not the station's (HTTP 403)."""


def default_token_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "twinspect" / "token"


def load_or_create(path: Path) -> tuple[str, bool]:
    """(token, made now). Refuses a token file that group or others can read or write."""
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path), False
    except OSError as e:
        raise BadInput(f"--token-file {path}: cannot create ({e.strerror or e})") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def _read(path: Path) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"--token-file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise BadInput(
                f"--token-file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
                f"chmod 600 {path} (or remove it: a new token is made at the next start)"
            )
        lines = path.read_text().split()
    except OSError as e:
        raise BadInput(f"--token-file {path}: cannot read ({e.strerror or e})") from None
    token = lines[0] if lines else ""
    if len(token) < 16:
        raise BadInput(f"--token-file {path}: holds no token of at least 16 characters")
    return token


def check(header: str | None, token: str) -> None:
    """Raise Unauthorized (no bearer token) or Forbidden (not this one); constant-time compare."""
    if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
        raise Unauthorized(
            "this changes the station: send the token as 'Authorization: Bearer <token>' "
            "(it is in the file 'twinspect serve' named at start)"
        )
    if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        raise Forbidden("wrong token: nothing changed")

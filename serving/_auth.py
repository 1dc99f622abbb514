"""Bearer-token auth shared by every sona HTTP service.

Tokens are HS256 JWTs (PyJWT) with claims ``sub`` (the user id), ``exp`` and
``iat``. A ``scope`` claim (space-separated string or list) containing
``sona:service`` marks a trusted backend that may act for any user; any other
``scope`` type is a malformed token. Only HS256
is accepted, so ``alg: none`` and algorithm-confusion tokens are rejected.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from sona import EnvVarError
from sona_app.settings import Settings

__all__ = [
    "SERVICE_SCOPE",
    "AuthError",
    "ForbiddenError",
    "Principal",
    "TokenPolicy",
    "authorize",
    "decode_token",
    "dev_jwt_secret",
    "dev_secret_path",
    "issue_token",
    "parse_bearer",
    "resolve_jwt_secret",
]

SERVICE_SCOPE = "sona:service"
_ALGORITHMS = ["HS256"]
#: Clock skew tolerated on ``exp``/``iat``/``nbf`` between the token issuer and this host.
LEEWAY_SECONDS = 30


class AuthError(Exception):
    """The request carries no valid token (HTTP 401). ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ForbiddenError(Exception):
    """A valid token asks for another user's data without the service scope (HTTP 403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject and scopes."""

    user_id: str
    scopes: frozenset[str]

    @property
    def is_service(self) -> bool:
        return SERVICE_SCOPE in self.scopes


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a token must satisfy beyond its signature: ``JWT_MAX_LIFETIME``, ``JWT_AUDIENCE``, ``JWT_ISSUER``.

    A bounded lifetime limits what a leaked token is worth; ``aud``/``iss`` keep a
    token minted for another service (same secret, other audience) out.
    """

    max_lifetime_seconds: int | None = None
    audience: str | None = None
    issuer: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy:
        return cls(
            max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )


def decode_token(token: str, secret: str, policy: TokenPolicy | None = None) -> Principal:
    """Verify signature, algorithm, ``exp``/``iat``, ``sub`` and ``policy``; else raise :class:`AuthError`."""
    policy = policy or TokenPolicy()
    required = ["exp", "iat", "sub"]
    required += ["aud"] if policy.audience else []
    required += ["iss"] if policy.issuer else []
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=_ALGORITHMS,
            options={"require": required},
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("expired", "token has expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        reason = "missing_sub" if exc.claim == "sub" else "missing_claim"
        raise AuthError(reason, f"token is missing the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("bad_signature", "token signature is invalid") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError("bad_algorithm", "token algorithm is not HS256") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthError("not_yet_valid", "token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("bad_audience", f"token audience is not {policy.audience!r}") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("bad_issuer", f"token issuer is not {policy.issuer!r}") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError("malformed", f"token is invalid: {exc}") from exc
    limit = policy.max_lifetime_seconds
    lifetime = _lifetime(claims)
    if limit is not None and (lifetime is None or lifetime > limit):
        raise AuthError("lifetime_too_long", f"token lifetime (exp - iat) exceeds {limit} s")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError("missing_sub", "token has no usable 'sub' claim")
    return Principal(user_id=sub, scopes=_scopes(claims.get("scope", "")))


def _lifetime(claims: dict[str, object]) -> float | None:
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, int | float) and isinstance(iat, int | float):
        return float(exp) - float(iat)
    return None


def _scopes(raw: object) -> frozenset[str]:
    """The ``scope`` claim as a set: a space-separated string or a list of strings, nothing else."""
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return frozenset(raw)
    raise AuthError("malformed", "token 'scope' claim must be a string or a list of strings")


def parse_bearer(authorization: str | None) -> str:
    """Extract the token from an ``Authorization`` header value."""
    if not authorization:
        raise AuthError("missing", "Authorization header with a Bearer token is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed", "Authorization header must be 'Bearer <token>'")
    return token.strip()


def authorize(principal: Principal, user_id: str) -> None:
    """Allow a user to act on their own data, and service tokens on anyone's."""
    if principal.is_service or principal.user_id == user_id:
        return
    raise ForbiddenError(f"token for user {principal.user_id!r} may not act for user {user_id!r}")


def issue_token(user_id: str, secret: str, *, ttl_seconds: int = 3600, scopes: tuple[str, ...] = ()) -> str:
    """Mint a token (dev mode, tests, trusted backends)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, secret, algorithm="HS256")


def dev_secret_path(settings: Settings) -> Path:
    """Where the development JWT secret of one deployment (one ``SONA_DATA_DIR``) is kept."""
    return settings.data_dir / "dev-jwt-secret"


def dev_jwt_secret(settings: Settings) -> str:
    """The development secret, created once (0600) in ``SONA_DATA_DIR`` and read by every process.

    Every worker, replica and ``sona token`` of a deployment must sign with the
    same key, so it cannot be generated per process. The first process writes a
    fresh secret to a private temporary file and links it into place (``link``
    fails if the name exists), so no process ever reads a half-written secret
    and concurrent starters all end up with the winner's.
    """
    path = dev_secret_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its secret
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if not secret:
        raise EnvVarError("JWT_SECRET", f"is not set and the development secret {path} is empty; delete it")
    return secret


def resolve_jwt_secret(settings: Settings) -> str:
    """The configured secret; in dev mode the deployment's shared dev secret; else refuse to start."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.dev_mode:
        return dev_jwt_secret(settings)
    raise EnvVarError("JWT_SECRET", "is not set; set it, or SONA_DEV_MODE=1 for local development")

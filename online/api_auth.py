"""Who is calling the operator API: bearer tokens and roles, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from .store import AuthError, ForbiddenError, Principal

__all__ = ["Admin", "Reader", "Writer", "principal_of", "role_check"]


def principal_of(request: Request) -> Principal:
    """The API token's holder (raises :class:`AuthError`: 401)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token: set WAVESIGN_TOKEN")
    principal: Principal = request.app.state.store.authenticate(token.strip())
    return principal


def role_check(*allowed: str) -> Callable[[Request], Principal]:
    """A dependency admitting only tokens of the ``allowed`` roles (else 403)."""

    def dependency(request: Request) -> Principal:
        who = principal_of(request)
        if who.role not in allowed:
            raise ForbiddenError(f"token {who.name} has role {who.role}, which may not do this")
        return who

    return dependency


Reader = Annotated[Principal, Depends(role_check("admin", "operator", "auditor"))]
Writer = Annotated[Principal, Depends(role_check("admin", "operator"))]
Admin = Annotated[Principal, Depends(role_check("admin"))]

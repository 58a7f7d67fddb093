"""HTTP routes of the auth service: thin adapters from HTTP to :class:`AuthService`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
)

from apps.auth.keys import KeyRing
from apps.auth.models import UserStatus
from apps.auth.schemas import (
    DeletionAccepted,
    Jwks,
    LoginRequest,
    MeResponse,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    Saga,
    TokenPair,
)
from apps.auth.services import Account, AuthService, Tokens
from shared.auth import SECURITY, Principal, bearer_token, current_principal
from shared.http import (
    DEVICE_TOKEN_HEADER,
    DEVICE_TOKEN_ISSUED,
    DEVICE_TOKEN_PATTERN,
    LOCATION,
    error_responses,
)


def provide_service(state: State) -> AuthService:
    service: NamedDependency[AuthService] = state["auth_service"]
    return service


def _pair(tokens: Tokens) -> TokenPair:
    return TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


NO_STORE = CacheControlHeader(no_store=True)
"""Token responses must not be kept by a browser, a proxy or a CDN (RFC 6749, 5.1)."""


def _me(account: Account) -> MeResponse:
    return MeResponse(
        user_id=account.user_id, email=account.email, roles=account.roles,
        status=UserStatus(account.status),
    )



class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = {"service": Provide(provide_service, sync_to_thread=False)}

    @post(
        "/register",
        operation_id="register",
        status_code=HTTP_201_CREATED,
        summary="Register a user; its profile appears shortly after",
        responses=error_responses(409, 422, 429, 503),
        response_headers=[LOCATION],
    )
    async def register(
        self, data: JSONBody[RegisterRequest], service: NamedDependency[AuthService],
        request: Request[Any, Any, Any],
    ) -> Response[RegisterResponse]:
        """Creates the account and its ``user.registered`` event in one transaction; the
        profiles worker creates the profile a few milliseconds later. 422 when the password
        breaks the policy (8-128 characters, not a common one, not the email); 409 when the
        email is taken. ``Location`` is the account (``GET /auth/me``, after login)."""
        client = request.client.host if request.client else "unknown"
        account = await service.register(data.email, data.password, data.display_name,
                                         client=client)
        body = RegisterResponse(user_id=account.user_id, email=account.email)
        return Response(body, status_code=HTTP_201_CREATED, headers={"Location": "/auth/me"})

    @post(
        "/login",
        operation_id="login",
        status_code=HTTP_200_OK,
        summary="Exchange email and password for an access and a refresh token",
        responses=error_responses(400, 401, 422, 429, 503),
        response_headers=[DEVICE_TOKEN_ISSUED],
        cache_control=NO_STORE,
    )
    async def login(
        self,
        data: JSONBody[LoginRequest],
        service: NamedDependency[AuthService],
        request: Request[Any, Any, Any],
        device_token: Annotated[str | None, HeaderParameter(
            name=DEVICE_TOKEN_HEADER, pattern=DEVICE_TOKEN_PATTERN, required=False,
            description="The device token of this account's last successful login on this "
            "device, if any: the device then has its own failed-login delays, apart from "
            "anyone else's failures. Unknown or another account's: ignored.",
        )] = None,
    ) -> Response[TokenPair]:
        """Unknown email and wrong password answer alike (401). After
        ``LOGIN_MAX_FAILURES_PER_ACCOUNT`` failed attempts on an account from one client (its
        device token, else its address), each next attempt from that client waits a growing
        delay (429 with ``Retry-After``); a device that signed in to the account before is
        not delayed by anyone else's failures."""
        client = request.client.host if request.client else "unknown"
        tokens = await service.login(data.email, data.password, client=client,
                                     device_token=device_token)
        headers = {DEVICE_TOKEN_HEADER: tokens.device_token} if tokens.device_token else {}
        return Response(_pair(tokens), headers=headers)

    @post(
        "/refresh",
        operation_id="refreshTokens",
        status_code=HTTP_200_OK,
        summary="Rotate a refresh token: the old one is spent, a new pair is issued",
        responses=error_responses(401, 422, 503),
        cache_control=NO_STORE,
    )
    async def refresh(
        self, data: JSONBody[RefreshRequest], service: NamedDependency[AuthService]
    ) -> TokenPair:
        """Each refresh token works once; presenting a spent one revokes its whole family
        (theft detection). The family's absolute lifetime never grows."""
        return _pair(await service.refresh(data.refresh_token))

    @post(
        "/logout",
        operation_id="logout",
        status_code=HTTP_204_NO_CONTENT,
        security=SECURITY,
        summary="Revoke the presented access token and end its session",
        dependencies={"principal": Provide(current_principal)},
        responses=error_responses(401, 503),
    )
    async def logout(
        self, principal: NamedDependency[Principal], service: NamedDependency[AuthService]
    ) -> None:
        """The access token is denied at once by every API (Redis denylist); the refresh
        token family of the session ends too."""
        await service.logout(principal)

    @get(
        "/me",
        operation_id="getMe",
        security=SECURITY,
        summary="The caller's account",
        dependencies={"principal": Provide(current_principal)},
        responses=error_responses(401, 404, 503),
    )
    async def me(
        self, principal: NamedDependency[Principal], service: NamedDependency[AuthService]
    ) -> MeResponse:
        """Id, email, roles and status of the account the token belongs to."""
        return _me(await service.me(principal))

    @delete(
        "/users/{user_id:uuid}",
        operation_id="deleteUser",
        status_code=HTTP_202_ACCEPTED,
        security=SECURITY,
        summary="Delete a user (self or admin): starts the deletion saga",
        dependencies={"principal": Provide(current_principal)},
        responses=error_responses(401, 403, 404, 503),
        response_headers=[LOCATION],
    )
    async def delete_user(
        self,
        user_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        service: NamedDependency[AuthService],
    ) -> Response[DeletionAccepted]:
        """Login and refresh are refused at once; follow the saga (``Location``) for the
        outcome. Deleting one's own account also returns a ``watch_token``."""
        saga_id = await service.request_deletion(principal, user_id)
        watch = await service.watch_token(principal, saga_id) if principal.user_id == user_id \
            else None
        return Response(DeletionAccepted(saga_id=saga_id, watch_token=watch),
                        status_code=HTTP_202_ACCEPTED,
                        headers={"Location": f"/auth/sagas/{saga_id}"})

    @get(
        "/sagas/{saga_id:uuid}",
        operation_id="getSaga",
        security=SECURITY,
        summary="A deletion saga with every step, its outcome and timestamps",
        dependencies={"principal": Provide(current_principal)},
        responses=error_responses(401, 404, 503),
    )
    async def get_saga(
        self,
        saga_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        service: NamedDependency[AuthService],
    ) -> Saga:
        """The saga's status and reason, and every step with its outcome (self or admin)."""
        return await service.saga(principal, saga_id)

    @get(
        "/sagas/{saga_id:uuid}/watch",
        operation_id="watchSaga",
        security=SECURITY,
        summary="A deletion saga, read with the watch token its deletion request returned",
        responses=error_responses(401, 404, 503),
    )
    async def watch_saga(
        self,
        saga_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        service: NamedDependency[AuthService],
    ) -> Saga:
        """For a person who deleted their own account: their tokens ended with the request,
        the watch token (``Authorization: Bearer``) reads this saga and nothing else."""
        return await service.watched_saga(bearer_token(request), saga_id)


@get(
    "/.well-known/jwks.json",
    operation_id="getJwks",
    tags=["auth"],
    summary="Public keys that verify our tokens (several during a rotation)",
    cache_control=None,
)
async def jwks(state: State) -> Jwks:
    """Every live Ed25519 key (``kid``) that signs or signed tokens still valid; the other
    APIs cache it and refetch on an unknown ``kid``."""
    ring: KeyRing = state["key_ring"]
    return Jwks(keys=[k.public_jwk for k in await ring.keys()])  # type: ignore[misc]

"""HTTP routes of the users API."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, MediaType, Response, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from apps.users.schemas import Profile, ProfilePatch
from apps.users.services import ProfileService
from shared.auth import SECURITY, Principal, current_principal, require_self_or_admin
from shared.http import error_responses


def _service(state: State) -> ProfileService:
    # Read from state rather than injected: a second dependency beside ``principal`` makes
    # Litestar resolve both in a task group on every request, which halves throughput.
    service: ProfileService = state["profile_service"]
    return service


def _json(body: bytes) -> Response[bytes]:
    return Response(body, media_type=MediaType.JSON)


_PROFILE = {
    200: ResponseSpec(Profile, description="The profile", generate_examples=False),
    **error_responses(401, 403, 404, 503),
}


class ProfileController(Controller):
    path = "/profiles"
    tags = ["profiles"]
    security = SECURITY
    dependencies = {"principal": Provide(current_principal)}

    @get("/me", operation_id="getMyProfile", summary="The caller's profile", responses=_PROFILE)
    async def me(self, principal: NamedDependency[Principal], state: State) -> Response[bytes]:
        """404 with ``Retry-After`` until the profiles worker has created the profile (a
        few milliseconds after registration)."""
        return _json(await _service(state).get(principal.user_id))

    @patch(
        "/me",
        operation_id="updateMyProfile",
        summary="Change display name or bio",
        responses={**_PROFILE, **error_responses(422)},
    )
    async def update_me(
        self,
        data: JSONBody[ProfilePatch],
        principal: NamedDependency[Principal],
        state: State,
    ) -> Response[bytes]:
        """Only the fields sent change; the cached copy is dropped at once."""
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        return _json(await _service(state).update(principal.user_id, changes))

    @get(
        "/{user_id:uuid}",
        operation_id="getProfile",
        summary="A profile (self or admin)",
        responses=_PROFILE,
    )
    async def by_id(
        self,
        user_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        state: State,
    ) -> Response[bytes]:
        """Another user's profile is for admins only (403)."""
        require_self_or_admin(principal, user_id)
        return _json(await _service(state).get(user_id))

"""Pages both frontends serve the same way: sign in, sign out, and a document's page image."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template

from frontends.bff.api import BackendError
from frontends.bff.core import frontend_of, safe_next
from frontends.bff.session import Session

Req = Request[Any, Any, Any]


@dataclass
class LoginForm:
    email: str = ""
    password: str = ""
    next: str = ""


class SignInController(Controller):
    """``GET/POST /login`` and ``POST /logout``; a frontend subclasses it to say where a
    signed-in person lands and who is admitted."""

    include_in_schema = False
    landing = "/"

    async def admit(self, request: Req, session: Session) -> None:
        """Refuse a signed-in person this frontend is not for (raise); default: everyone."""

    @get("/login")
    async def login_page(
        self, request: Req, next_path: Annotated[str | None, QueryParameter(name="next")] = None,
        signed_out: Annotated[bool, QueryParameter(name="signed_out")] = False,
    ) -> Template:
        frontend = frontend_of(request)
        await frontend.anonymous(request)
        return frontend.page(request, "login.html", email="", next=safe_next(next_path, ""),
                             error=None, signed_out=signed_out)

    @post("/login")
    async def login(
        self, request: Req,
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template | Redirect:
        frontend = frontend_of(request)
        try:
            session = await frontend.sign_in(request, data.email, data.password)
        except BackendError as exc:
            if exc.status not in (401, 422):
                raise
            return frontend.page(request, "login.html", status=401, email=data.email,
                                 next=safe_next(data.next, ""), signed_out=False,
                                 error="The email or the password is wrong.")
        await self.admit(request, session)
        return frontend.redirect(request, safe_next(data.next, self.landing))

    @post("/logout")
    async def logout(self, request: Req) -> Redirect:
        frontend = frontend_of(request)
        await frontend.sign_out(request)
        return frontend.redirect(request, "/login?signed_out=true")


async def page_image(request: Req, document_id: uuid.UUID, page_no: int) -> Response[bytes]:
    """A document's page as PNG, fetched from the admin API with the person's token."""
    response = await frontend_of(request).call(
        request, "admin", "GET", f"/documents/{document_id}/pages/{page_no}/image"
    )
    return Response(response.content, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=300"})

"""Pages of the user portal. Each handler asks the APIs on the person's behalf (through the
:class:`~frontends.bff.core.Frontend`) and renders a template from ``templates/`` beside it."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template

from frontends.bff.api import BackendError, ServiceDown
from frontends.bff.core import Frontend, client_ip, frontend_of
from frontends.bff.pages import SignInController, page_image
from frontends.portal import forms

Req = Request[Any, Any, Any]
FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)
FINAL_DOCUMENT = frozenset({"completed", "failed"})
FINAL_SAGA = frozenset({"completed", "compensated", "compensation_failed"})
LIST_LIMIT = 50


class HomeController(Controller):
    include_in_schema = False

    @get("/")
    async def home(self, request: Req) -> Redirect:
        frontend = frontend_of(request)
        session = await frontend.current(request)
        return frontend.redirect(request, "/documents" if session and session.signed_in
                                 else "/login")


class SignIn(SignInController):
    landing = "/documents"


class RegisterController(Controller):
    """Create an account, then sign in with it."""

    include_in_schema = False

    @get("/register")
    async def register_page(self, request: Req) -> Template:
        frontend = frontend_of(request)
        await frontend.anonymous(request)
        return frontend.page(request, "register.html", form=forms.RegisterForm(), errors={})

    @post("/register")
    async def register(
        self, request: Req, data: Annotated[forms.RegisterForm, FormBody]
    ) -> Template | Redirect:
        frontend = frontend_of(request)
        errors = data.check()
        if not errors:
            try:
                await frontend.api.request("auth", "POST", "/auth/register",
                                           json=data.payload(), client_ip=client_ip(request))
            except BackendError as exc:
                errors = forms.register_errors(exc)
        if errors:
            return frontend.page(request, "register.html", status=422, form=data.blank_password(),
                                 errors=errors)
        session = await frontend.sign_in(request, data.email, data.password)
        session.notice = "Welcome! Your account is ready."
        await frontend.save(session)
        return frontend.redirect(request, "/profile")


class ProfileController(Controller):
    """The profile: view and edit, read-only from the last copy while the users API is down."""

    path = "/profile"
    include_in_schema = False

    @get("/")
    async def show(self, request: Req) -> Template:
        frontend = frontend_of(request)
        return await _profile_page(frontend, request, "profile.html")

    @get("/fragment")
    async def fragment(self, request: Req) -> Template:
        frontend = frontend_of(request)
        return await _profile_page(frontend, request, "profile_fragment.html")

    @post("/")
    async def save(
        self, request: Req, data: Annotated[forms.ProfileForm, FormBody]
    ) -> Template | Redirect:
        frontend = frontend_of(request)
        session = await frontend.signed_in(request)
        try:
            response = await frontend.call(request, "users", "PATCH", "/profiles/me",
                                           json=data.payload())
        except BackendError as exc:
            if exc.status != 422:
                raise
            return frontend.page(request, "profile.html", status=422, profile=data.payload(),
                                 state="editable", errors=forms.profile_errors(exc),
                                 seen_at=None)
        session.profile = response.json() | {"seen_at": time.time()}
        session.notice = "Your profile was saved."
        await frontend.save(session)
        return frontend.redirect(request, "/profile")


async def _profile_page(frontend: Frontend, request: Req, template: str) -> Template:
    session = await frontend.signed_in(request)
    try:
        response = await frontend.call(request, "users", "GET", "/profiles/me", expect=(404,))
    except ServiceDown:
        if session.profile is None:
            raise
        # The users API is down: the last profile we saw, read-only, and we say so.
        return frontend.page(request, template, profile=session.profile, state="stale",
                             errors={}, seen_at=session.profile.get("seen_at"))
    if response.status_code == 404:
        return frontend.page(request, template, profile=None, state="creating", errors={},
                             seen_at=None)
    profile = response.json()
    session.profile = profile | {"seen_at": time.time()}
    await frontend.save(session)
    return frontend.page(request, template, profile=profile, state="editable", errors={},
                         seen_at=None)


class DocumentsController(Controller):
    """Upload, the live list, one document with its boxes, deletion."""

    path = "/documents"
    include_in_schema = False

    @get("/")
    async def index(self, request: Req) -> Template:
        frontend = frontend_of(request)
        await frontend.signed_in(request)
        documents = await _documents(frontend, request)
        return frontend.page(request, "documents.html", documents=documents,
                             limits=forms.upload_limits(frontend.settings.uploads),
                             final=_all_final(documents))

    @get("/rows")
    async def rows(self, request: Req) -> Template:
        frontend = frontend_of(request)
        documents = await _documents(frontend, request)
        return frontend.page(request, "document_rows.html", documents=documents,
                             final=_all_final(documents))

    @post("/")
    async def upload(
        self, request: Req,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Redirect:
        frontend = frontend_of(request)
        session = await frontend.signed_in(request)
        upload = data.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise BackendError("admin", 422, "validation_failed", "Choose a file to upload.",
                               details=[{"key": "Document", "message": "no file was chosen"}])
        content = await upload.read()
        response = await frontend.call(
            request, "admin", "POST", "/documents",
            files={"file": (upload.filename, content, upload.content_type or
                            "application/octet-stream")},
        )
        session = await frontend.signed_in(request)
        session.notice = f"{upload.filename} was uploaded; its text is being recognised."
        await frontend.save(session)
        return frontend.redirect(request, f"/documents#doc-{response.json()['document_id']}")

    @get("/{document_id:uuid}")
    async def show(self, request: Req, document_id: FromPath[uuid.UUID]) -> Template:
        frontend = frontend_of(request)
        document = await _document(frontend, request, document_id)
        return frontend.page(request, "document.html", document=document,
                             final=document["status"] in FINAL_DOCUMENT)

    @get("/{document_id:uuid}/status")
    async def status(self, request: Req, document_id: FromPath[uuid.UUID]) -> Template:
        frontend = frontend_of(request)
        document = await _document(frontend, request, document_id)
        return frontend.page(request, "document_status.html", document=document,
                             final=document["status"] in FINAL_DOCUMENT)

    @get("/{document_id:uuid}/pages/{page_no:int}/image")
    async def page_image(
        self, request: Req, document_id: FromPath[uuid.UUID], page_no: FromPath[int]
    ) -> Response[bytes]:
        return await page_image(request, document_id, page_no)

    @post("/{document_id:uuid}/delete")
    async def delete(self, request: Req, document_id: FromPath[uuid.UUID]) -> Redirect:
        frontend = frontend_of(request)
        await frontend.call(request, "admin", "DELETE", f"/documents/{document_id}")
        session = await frontend.signed_in(request)
        session.notice = "The document was deleted."
        await frontend.save(session)
        return frontend.redirect(request, "/documents")


async def _documents(frontend: Frontend, request: Req) -> list[dict[str, Any]]:
    session = await frontend.signed_in(request)
    # The person's own documents, also for an admin (whom the API would show everyone's).
    page = (await frontend.call(request, "admin", "GET", "/documents",
                                params={"limit": LIST_LIMIT, "owner_id": session.user_id})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def _document(frontend: Frontend, request: Req, document_id: uuid.UUID) -> dict[str, Any]:
    document: dict[str, Any] = (
        await frontend.call(request, "admin", "GET", f"/documents/{document_id}")
    ).json()
    return document


def _all_final(documents: list[dict[str, Any]]) -> bool:
    return all(d["status"] in FINAL_DOCUMENT for d in documents)


class DeletionController(Controller):
    """Delete my account, then watch the deletion saga (and its compensation) live."""

    path = "/account"
    include_in_schema = False

    @get("/")
    async def show(self, request: Req) -> Template:
        frontend = frontend_of(request)
        session = await frontend.current(request)
        if session is None or session.saga is None:
            await frontend.signed_in(request)
            return frontend.page(request, "account.html", saga=None, final=True)
        saga = await _saga(frontend, session.saga)
        return frontend.page(request, "account.html", saga=saga,
                             final=saga["status"] in FINAL_SAGA)

    @get("/progress")
    async def progress(self, request: Req) -> Template:
        frontend = frontend_of(request)
        session = await frontend.current(request)
        if session is None or session.saga is None:
            return frontend.page(request, "saga_progress.html", saga=None, final=True)
        saga = await _saga(frontend, session.saga)
        return frontend.page(request, "saga_progress.html", saga=saga,
                             final=saga["status"] in FINAL_SAGA)

    @post("/delete")
    async def delete(self, request: Req) -> Redirect:
        frontend = frontend_of(request)
        session = await frontend.signed_in(request)
        accepted = (await frontend.call(
            request, "auth", "DELETE", f"/auth/users/{session.user_id}"
        )).json()
        # The auth service revoked this person's tokens with the request: forget them, keep
        # the watch token that reads this one saga.
        session.saga = {"saga_id": str(accepted["saga_id"]),
                        "watch_token": str(accepted.get("watch_token") or "")}
        session.access_token = session.refresh_token = None
        session.access_expires_at = 0.0
        session.profile = None
        await frontend.save(session)
        return frontend.redirect(request, "/account")


async def _saga(frontend: Frontend, saga: dict[str, str]) -> dict[str, Any]:
    response = await frontend.api.request(
        "auth", "GET", f"/auth/sagas/{saga['saga_id']}/watch", token=saga["watch_token"]
    )
    data: dict[str, Any] = response.json()
    return in_words(data)


STEP_LABELS = {
    "profile.delete": "Remove your profile",
    "documents.delete": "Delete your documents",
    "user.delete": "Close your account",
    "profile.restore": "Restore your profile",
    "user.reactivate": "Reopen your account",
}
"""The deletion saga's steps (``apps.auth.sagas``) as the person reads them."""

LEGAL_HOLD_WORDS = (
    "Some of your documents are under a legal hold: they must be kept for now, so your "
    "account cannot be deleted yet. Please contact support to find out more."
)


def in_words(saga: dict[str, Any]) -> dict[str, Any]:
    """The saga as the auth API reports it, plus what a person reads: each step's label and,
    when a step failed, ``explanation`` (why, in plain words). The API's ``reason`` names
    internal ids; the page keeps it under "Details for support"."""
    steps = saga.get("steps") or []
    for step in steps:
        step["label"] = STEP_LABELS.get(step.get("name", ""), step.get("name", ""))
    failed = next((s for s in steps if s.get("status") == "failed"), None)
    saga["explanation"] = None if failed is None else _why(failed, saga)
    return saga


def _why(step: dict[str, Any], saga: dict[str, Any]) -> str:
    detail = str(step.get("detail") or saga.get("reason") or "")
    if step.get("name") == "documents.delete" and "legal hold" in detail:
        return LEGAL_HOLD_WORDS
    return f"The step \u201c{step['label']}\u201d could not be completed."

"""Pages of the admin console. Only signed-in admins get past :func:`admin_guard`; every
change goes through :class:`~frontends.console.services.Operations` (audited)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template

from amsctl.dlq import service as dlq
from amsctl.dlq.model import Selection, group_by_fingerprint
from apps.admin.models import DocumentStatus
from apps.auth.audit import AuditFilter, AuditOutcome, AuditSource
from apps.auth.models import SagaStatus
from frontends.bff.core import Forbidden, NotSignedIn, frontend_of, safe_next
from frontends.bff.pages import SignInController, page_image
from frontends.bff.session import Session
from frontends.console import charts
from frontends.console.services import Admin, Operations
from shared.errors import DependencyUnavailable, ValidationFailed

Req = Request[Any, Any, Any]
FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)
DOCUMENT_STATUSES = tuple(str(status) for status in DocumentStatus)
SAGA_STATUSES = tuple(str(status) for status in SagaStatus)
PAGE = 50
NOT_ADMIN = ("This console is for administrators. The account you signed in with is not "
             "an administrator; ask one to grant you the admin role.")


async def admin_guard(connection: Any, _: BaseRouteHandler) -> None:
    """Signed in (else the sign-in page) and an admin (else a 403 page)."""
    session = await frontend_of(connection).current(connection)
    if session is None or not session.signed_in:
        raise NotSignedIn
    if not session.is_admin:
        raise Forbidden(NOT_ADMIN)


async def admin_of(request: Req) -> Admin:
    session = await frontend_of(request).signed_in(request)
    return Admin(email=str(session.email), user_id=str(session.user_id))


def operations(request: Req) -> Operations:
    ops: Operations = request.app.state["operations"]
    return ops


async def _note(request: Req, notice: str) -> None:
    frontend = frontend_of(request)
    session = await frontend.signed_in(request)
    session.notice = notice
    await frontend.save(session)


class SignIn(SignInController):
    landing = "/"

    async def admit(self, request: Req, session: Session) -> None:
        if not session.is_admin:
            # Not an admin: end the session at once (and at the auth API), then say why.
            frontend = frontend_of(request)
            await frontend.revoke(session)
            await frontend.end(request, session)
            raise Forbidden(NOT_ADMIN)


class OverviewController(Controller):
    """The last hour in charts."""

    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def overview(self, request: Req) -> Template:
        return await _charts_page(request, "overview.html")

    @get("/charts")
    async def charts_fragment(self, request: Req) -> Template:
        return await _charts_page(request, "charts.html")


async def _charts_page(request: Req, template: str) -> Template:
    history: charts.MetricsHistory = request.app.state["metrics_history"]
    frontend = frontend_of(request)
    return frontend.page(request, template, charts=charts.charts(history),
                         targets=history.latest_up(), width=charts.WIDTH,
                         height=charts.HEIGHT, pad_left=charts.PAD_LEFT,
                         pad_bottom=charts.PAD_BOTTOM, pad_top=charts.PAD_TOP)


class DocumentsController(Controller):
    """Every user's documents, legal holds, the OCR view."""

    path = "/documents"
    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def index(
        self, request: Req, *,
        owner: Annotated[str | None, QueryParameter(name="owner")] = None,
        status: Annotated[str | None, QueryParameter(name="status")] = None,
        hold: Annotated[str | None, QueryParameter(name="hold")] = None,
        offset: Annotated[int, QueryParameter(name="offset", ge=0)] = 0,
    ) -> Template:
        frontend = frontend_of(request)
        params: dict[str, Any] = {"limit": PAGE, "offset": offset}
        errors = {}
        if owner:
            try:
                params["owner_id"] = str(uuid.UUID(owner.strip()))
            except ValueError:
                errors["owner"] = "An owner is a user id (a UUID)."
        if status in DOCUMENT_STATUSES:
            params["status"] = status
        if hold in ("yes", "no"):
            params["legal_hold"] = "true" if hold == "yes" else "false"
        if errors:
            # A filter that cannot be applied lists nothing: everyone's documents under a
            # mistyped owner would read as that owner's.
            found: dict[str, Any] = {"items": [], "total": 0, "limit": PAGE, "offset": offset}
        else:
            found = (await frontend.call(request, "admin", "GET", "/documents",
                                         params=params)).json()
        return frontend.page(request, "documents.html", status=422 if errors else 200,
                             page=found, statuses=DOCUMENT_STATUSES,
                             filters={"owner": owner or "", "status": status or "",
                                      "hold": hold or ""}, errors=errors, offset=offset,
                             page_size=PAGE)

    @get("/{document_id:uuid}")
    async def show(self, request: Req, document_id: FromPath[uuid.UUID]) -> Template:
        frontend = frontend_of(request)
        document = (await frontend.call(request, "admin", "GET",
                                        f"/documents/{document_id}")).json()
        return frontend.page(request, "document.html", document=document)

    @get("/{document_id:uuid}/pages/{page_no:int}/image")
    async def page_image(
        self, request: Req, document_id: FromPath[uuid.UUID], page_no: FromPath[int]
    ) -> Response[bytes]:
        return await page_image(request, document_id, page_no)

    @post("/{document_id:uuid}/legal-hold")
    async def legal_hold(
        self, request: Req, document_id: FromPath[uuid.UUID],
        data: Annotated[dict[str, str], FormBody],
    ) -> Redirect:
        frontend = frontend_of(request)
        hold = data.get("hold") == "on"
        # The admin API records the change in the audit trail under this admin's identity.
        await frontend.call(request, "admin", "PUT", f"/documents/{document_id}/legal-hold",
                            json={"legal_hold": hold})
        await _note(request, f"Legal hold {'placed on' if hold else 'lifted from'} document "
                             f"{document_id}.")
        return frontend.redirect(request, safe_next(data.get("back"), "/documents"))


class SagasController(Controller):
    path = "/sagas"
    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def index(
        self, request: Req, status: Annotated[str | None, QueryParameter(name="status")] = None,
    ) -> Template:
        chosen = status if status in SAGA_STATUSES else None
        views = await operations(request).sagas(chosen)
        return frontend_of(request).page(request, "sagas.html", sagas=views,
                                         statuses=SAGA_STATUSES, chosen=chosen or "")

    @get("/{saga_id:uuid}")
    async def show(self, request: Req, saga_id: FromPath[uuid.UUID]) -> Template:
        ops = operations(request)
        view = await ops.saga(saga_id)
        try:
            letters, broker_error = await ops.letters_of_saga(saga_id), None
        except DependencyUnavailable as exc:
            letters, broker_error = [], str(exc)
        return frontend_of(request).page(request, "saga.html", saga=view, letters=letters,
                                         broker_error=broker_error)


@dataclass
class MoveForm:
    action: str = "replay"
    message_id: str = ""
    fingerprint: str = ""
    queue: str = ""
    reason: str = ""

    def request(self, admin: Admin | None = None) -> dlq.MoveRequest:
        if self.action not in (dlq.REPLAY, dlq.PURGE):
            raise ValidationFailed("the action is replay or purge")
        if not (self.message_id or self.fingerprint or self.queue):
            raise ValidationFailed("say what to move: a message, a failure group or a queue")
        selection = Selection(
            message_ids=frozenset({self.message_id}) if self.message_id else frozenset(),
            fingerprint=self.fingerprint or None,
        )
        return dlq.MoveRequest(
            self.action, [self.queue] if self.queue else None, selection,
            reason=self.reason.strip() or None, actor=admin.actor if admin else None,
        )


class DeadLettersController(Controller):
    path = "/dead-letters"
    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def index(
        self, request: Req, error: Annotated[str | None, QueryParameter(name="error")] = None,
        queue: Annotated[str | None, QueryParameter(name="queue")] = None,
    ) -> Template:
        queues, letters = await operations(request).overview(Selection(error=error or None),
                                                              queue)
        chosen = queue if queue in {q.name for q in queues} else None
        return frontend_of(request).page(
            request, "dead_letters.html", queues=queues, groups=group_by_fingerprint(letters),
            letters={dl.message_id: dl for dl in letters}, error=error or "",
            queue=chosen or "",
        )

    @get("/{message_id:str}")
    async def show(self, request: Req, message_id: FromPath[str]) -> Template:
        letter, history = await operations(request).dead_letter(message_id)
        return frontend_of(request).page(request, "dead_letter.html", letter=letter,
                                         history=history)

    @post("/preview")
    async def preview(self, request: Req, data: Annotated[MoveForm, FormBody]) -> Template:
        plan = await operations(request).preview(data.request())
        return frontend_of(request).page(request, "move_preview.html", plan=plan, form=data)

    @post("/confirm")
    async def confirm(self, request: Req, data: Annotated[MoveForm, FormBody]) -> Template:
        admin = await admin_of(request)
        result = await operations(request).move(admin, data.request(admin))
        return frontend_of(request).page(request, "move_result.html", result=result, form=data)


class OutboxController(Controller):
    path = "/outbox"
    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def index(self, request: Req) -> Template:
        rows = await operations(request).outbox()
        return frontend_of(request).page(request, "outbox.html", rows=rows)

    @post("/requeue")
    async def requeue(self, request: Req, data: Annotated[dict[str, str], FormBody]) -> Redirect:
        admin = await admin_of(request)
        event_id = data.get("event_id") or None
        count = await operations(request).requeue(
            admin, data.get("database", ""), [event_id] if event_id else None
        )
        await _note(request, f"{data.get('database')}: {count} parked event(s) re-queued.")
        return frontend_of(request).redirect(request, "/outbox")


class AuditController(Controller):
    path = "/audit"
    guards = [admin_guard]
    include_in_schema = False

    @get("/")
    async def index(
        self, request: Req, *,
        actor: Annotated[str | None, QueryParameter(name="actor")] = None,
        action: Annotated[str | None, QueryParameter(name="action")] = None,
        outcome: Annotated[str | None, QueryParameter(name="outcome")] = None,
        source: Annotated[str | None, QueryParameter(name="source")] = None,
        target: Annotated[str | None, QueryParameter(name="target")] = None,
        before_id: Annotated[int | None, QueryParameter(name="before_id", ge=1)] = None,
    ) -> Template:
        filters = AuditFilter(
            actor=actor or None, action=action or None, target=target or None,
            outcome=AuditOutcome(outcome) if outcome in set(AuditOutcome) else None,
            source=AuditSource(source) if source in set(AuditSource) else None,
            before_id=before_id, limit=PAGE,
        )
        entries = await operations(request).audit_entries(filters)
        return frontend_of(request).page(
            request, "audit.html", entries=entries, page_size=PAGE,
            filters={"actor": actor or "", "action": action or "", "outcome": outcome or "",
                     "source": source or "", "target": target or ""},
            outcomes=[o.value for o in AuditOutcome], sources=[s.value for s in AuditSource],
        )

"""The portal and the console in a real browser (Debian's Chromium driven by Playwright),
against every process of the system started as a user starts them, clicking as a person does.

Screenshots of the main pages go to ``var/screenshots/`` (looked at when the tests change: a
page that looks broken is a failed test). Every page is also checked for what a person would
notice without looking closely: no script or style refused by the CSP, no failed request, the
stylesheet applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.documents_support import text_page_png
from tests.e2e.stack import ROOT, Stack, running_stack, wait_until
from tests.support import env_for, isolated_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SHOTS = ROOT / "var" / "screenshots"
PASSWORD = "correct horse battery"
ADMIN = ("operator@example.org", "operator password 1")
LINES = ("Invoice 2026-114", "Total due: 1,250 EUR", "Pay by 31 December")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"fe{uuid.uuid4().hex[:8]}:"
    with (
        isolated_settings("fe", redis_key_prefix=prefix, saga_sweep_interval_s=0.5) as settings,
        running_stack(
            settings, with_frontends=True, log_dir=tmp_path_factory.mktemp("logs"),
            env={"OCR_ENGINE": "tesseract", "CONSOLE_SCRAPE_INTERVAL_S": "1"},
        ) as running,
    ):
        subprocess.run(
            [sys.executable, "-m", "amsctl", "users", "create-admin", "--email", ADMIN[0],
             "--password-stdin"], input=f"{ADMIN[1]}\n", text=True,
            cwd=ROOT, env=env_for(running.settings), check=True, capture_output=True,
        )
        yield running


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    # After the stack: Playwright's sync API runs an event loop in this thread, and the
    # stack's set-up and tear-down use asyncio.run.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Person:
    """One browser profile (its own cookies), with what went wrong on its pages."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 900}
        )
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # An error page's own status (a 403 the test asserts) is not a failed resource.
        own_page = message.location.get("url") == self.page.url
        if message.type == "error" and not (own_page and "Failed to load" in message.text):
            self.problems.append(f"console: {message.text} ({message.location.get('url')})")

    def _response(self, response: Any) -> None:
        if "/static/" in response.url and response.status != 200:
            self.problems.append(f"static {response.status}: {response.url}")

    def looks_right(self, shot: str | None = None) -> None:
        """No CSP refusal or failed request, the stylesheet applied; then the screenshot."""
        assert not self.problems, self.problems
        background = self.page.evaluate(
            "getComputedStyle(document.querySelector('header.top')).backgroundColor"
        )
        assert background not in ("", "rgba(0, 0, 0, 0)"), "the stylesheet was not applied"
        if shot:
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser: Browser, stack: Stack) -> Iterator[Person]:
    assert stack.portal_url is not None
    someone = Person(browser, stack.portal_url)
    yield someone
    someone.close()


@pytest.fixture
def admin(browser: Browser, stack: Stack) -> Iterator[Person]:
    assert stack.console_url is not None
    operator = Person(browser, stack.console_url)
    sign_in(operator.page, *ADMIN)
    expect(operator.page.get_by_role("heading", name="The last hour")).to_be_visible()
    yield operator
    operator.close()


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def register(person: Person, name: str = "Ada Lovelace") -> str:
    email = f"ada.{uuid.uuid4().hex[:10]}@example.org"
    page = person.page
    page.goto("/register")
    person.looks_right("portal-register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Display name").fill(name)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url("/profile")
    return email


def upload(person: Person, tmp_path: Path) -> str:
    """Upload a scan on /documents; the document id once the list shows it."""
    scan = tmp_path / "invoice.png"
    scan.write_bytes(text_page_png(LINES))
    page = person.page
    page.get_by_role("link", name="Documents", exact=True).click()
    expect(page.get_by_text("up to 20 MB")).to_be_visible()  # the limits, before uploading
    page.get_by_label("Document").set_input_files(scan)
    page.get_by_role("button", name="Upload").click()
    row = page.locator("tr[data-status]").first
    expect(row).to_be_visible()
    return str(row.get_attribute("id")).removeprefix("doc-")


def session_tokens(stack: Stack, context: BrowserContext, app: str) -> dict[str, Any]:
    """The server-side session of a browser (read from Redis as the frontend stores it)."""
    [cookie] = [c for c in context.cookies() if c["name"] == f"ams_{app}_session"]
    digest = hashlib.sha256(cookie["value"].encode()).hexdigest()
    client = redis.Redis.from_url(stack.direct.redis.url)
    raw = client.get(f"{stack.direct.redis.key_prefix}{app}:session:{digest}")
    client.close()
    assert raw is not None, "no session in Redis for the browser's cookie"
    data: dict[str, Any] = json.loads(raw)
    return data


# --- the person's journey --------------------------------------------------------------------


def test_register_profile_upload_boxes_then_delete_account(
    person: Person, stack: Stack, tmp_path: Path
) -> None:
    page = person.page
    email = register(person)
    expect(page.get_by_label("Display name")).to_have_value("Ada Lovelace")
    page.get_by_label("Display name").fill("Ada King")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your profile was saved.")).to_be_visible()
    expect(page.get_by_label("Display name")).to_have_value("Ada King")
    person.looks_right("portal-profile")

    document_id = upload(person, tmp_path)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    row = page.locator(f"#doc-{document_id}")
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    assert page.evaluate("window.__sameDocument === true"), "the list reloaded the page"
    person.looks_right("portal-documents")

    row.get_by_role("link").click()
    boxes = page.locator(".ocr-box")
    expect(boxes.first).to_be_visible()
    assert boxes.count() == page.locator(".ocr-lines li").count() >= len(LINES)
    text_beside = page.locator(".page-text").inner_text()
    assert "Invoice" in text_beside and "1,250" in text_beside
    image = page.locator(".page-svg image")
    assert page.evaluate("(img) => img.getBBox().width", image.element_handle()) > 0
    boxes.nth(1).hover()
    caption = page.locator(".ocr-caption")
    expect(caption).to_contain_text("% confidence")
    expect(caption).to_contain_text(boxes.nth(1).get_attribute("data-text") or "?")
    boxes.nth(0).focus()
    expect(caption).to_contain_text(boxes.nth(0).get_attribute("data-text") or "?")
    person.looks_right("portal-document")

    page.get_by_role("link", name="Account").click()
    page.get_by_role("button", name="Delete my account").click()
    saga = page.locator("[data-saga-status]")
    expect(saga).to_have_attribute("data-saga-status", "completed", timeout=60_000)
    expect(page.get_by_role("heading", name="Your account has been deleted")).to_be_visible()
    expect(page.locator("ol.timeline li")).to_have_count(3)
    person.looks_right("portal-account-deleted")

    sign_in(page, email, PASSWORD)
    expect(page.get_by_text("The email or the password is wrong.")).to_be_visible()


def test_a_person_deletes_a_document(person: Person, tmp_path: Path) -> None:
    register(person)
    document_id = upload(person, tmp_path)
    page = person.page
    row = page.locator(f"#doc-{document_id}")
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("The document was deleted.")).to_be_visible()
    expect(page.locator(f"#doc-{document_id}")).to_have_count(0)
    expect(page.get_by_text("No documents yet.")).to_be_visible()
    person.looks_right()


def test_a_legal_hold_makes_the_portal_show_the_compensation(
    person: Person, admin: Person, tmp_path: Path
) -> None:
    register(person, "Grace Hopper")
    document_id = upload(person, tmp_path)

    console = admin.page
    console.goto("/documents?hold=no")
    console.locator(f"#doc-{document_id}").get_by_role("button", name="Place hold").click()
    expect(console.get_by_text("Legal hold placed on document")).to_be_visible()
    expect(console.locator(f"#doc-{document_id}")).to_contain_text("on hold")
    admin.looks_right("console-documents")

    page = person.page
    page.get_by_role("link", name="Account").click()
    page.get_by_role("button", name="Delete my account").click()
    saga = page.locator("[data-saga-status]")
    expect(saga).to_have_attribute("data-saga-status", "compensated", timeout=60_000)
    expect(page.get_by_role("heading", name="Your account was not deleted")).to_be_visible()
    expect(saga).to_contain_text("legal hold")
    expect(saga.locator("li.kind-compensation")).to_have_count(2)
    person.looks_right("portal-account-compensated")

    console.goto("/sagas?status=compensated")
    console.locator("table a").first.click()
    expect(console.locator("ol.timeline li.kind-compensation")).to_have_count(2)
    admin.looks_right("console-saga")
    console.goto(f"/documents/{document_id}")
    expect(console.locator(".ocr-box").first).to_be_visible()
    admin.looks_right("console-document")


def _publish_poison(url: str, message_id: str) -> None:
    async def publish() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("events")
            await exchange.publish(
                aio_pika.Message(b'{"not": "a user"}', message_id=message_id,
                                 type="user.registered", content_type="application/json"),
                routing_key="user.registered",
            )

    # Playwright's sync API owns this thread's event loop.
    worker = threading.Thread(target=lambda: asyncio.run(publish()))
    worker.start()
    worker.join()


def test_the_console_replays_a_dead_letter_and_the_audit_trail_shows_it(
    admin: Person, stack: Stack
) -> None:
    message_id = f"poison-{uuid.uuid4().hex[:8]}"
    _publish_poison(stack.direct.broker.url, message_id)
    console = admin.page

    def listed() -> bool:
        console.goto("/dead-letters")
        return console.get_by_role("link", name=message_id).count() == 1

    wait_until(listed, 30, "the poison message in the dead-letter list")
    admin.looks_right("console-dead-letters")
    group = console.locator("section.group", has=console.get_by_role("link", name=message_id))
    group.get_by_role("button", name="Replay…").click()
    expect(console.get_by_role("heading", name="Replay: what would happen")).to_be_visible()
    plan = console.locator("table.plan")
    expect(plan).to_contain_text(message_id)
    expect(plan).to_contain_text("profiles")  # back to the queue it failed in
    admin.looks_right("console-replay-preview")
    console.get_by_label("Reason (recorded in the audit trail)").fill("fixed the producer")
    console.get_by_role("button", name="Confirm replay").click()
    expect(console.get_by_role("heading", name="Replayed: 1 message(s)")).to_be_visible()

    console.get_by_role("link", name="See the audit trail").click()
    entry = console.locator("tr[data-action='dlq.replay']", has_text=message_id)
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(ADMIN[0])
    expect(entry).to_contain_text("console")
    expect(entry).to_contain_text("fixed the producer")
    admin.looks_right("console-audit")

    # Still poison: it fails again and is back, now with its replay in its history.
    def back() -> bool:
        console.goto(f"/dead-letters/{message_id}")
        return console.get_by_text("replayed (op").count() > 0

    wait_until(back, 30, "the replayed message back in its dead-letter queue")
    admin.looks_right("console-dead-letter")


def test_the_console_shows_the_outbox_and_the_last_hour(admin: Person) -> None:
    console = admin.page
    console.goto("/outbox")
    for database in ("authdb", "apidb", "admindb"):
        expect(console.locator(f"tr[data-database={database}]")).to_be_visible()
    admin.looks_right("console-outbox")
    console.goto("/")
    expect(console.locator("figure.chart")).to_have_count(6)
    expect(console.locator(".targets")).to_contain_text("relay up")
    expect(console.locator("figure[data-series=relayed] polyline")).to_have_count(1,
                                                                              timeout=15_000)
    admin.looks_right("console-overview")


def test_a_non_admin_is_refused_by_the_console(
    browser: Browser, person: Person, stack: Stack
) -> None:
    email = register(person)
    assert stack.console_url is not None
    outsider = Person(browser, stack.console_url)
    try:
        sign_in(outsider.page, email, PASSWORD)
        expect(outsider.page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(outsider.page.get_by_text("for administrators")).to_be_visible()
        outsider.looks_right("console-refused")
        response = outsider.page.goto("/documents")
        assert response is not None
        expect(outsider.page).to_have_url("/login?next=/documents")
    finally:
        outsider.close()


# --- what the browser must never hold or be able to do ---------------------------------------


def test_the_session_cookie_is_http_only_and_no_token_reaches_the_page(
    person: Person, stack: Stack
) -> None:
    register(person)
    page = person.page
    [cookie] = [c for c in person.context.cookies() if c["name"] == "ams_portal_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    tokens = session_tokens(stack, person.context, "portal")
    secrets = [tokens["access_token"], tokens["refresh_token"]]
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.text()) if "text" in
            (r.headers.get("content-type") or "") else None)
    for path in ("/profile", "/documents", "/account", "/profile/fragment", "/documents/rows"):
        page.goto(path)
        html = page.content()
        assert not any(s in html for s in secrets), path
        assert not any(s[:40] in html for s in secrets), path
    assert seen
    assert not any(s in body for s in secrets for body in seen)
    assert page.evaluate("document.cookie") == ""


def test_a_form_posted_without_its_csrf_token_is_refused(person: Person) -> None:
    register(person, "Before")
    page = person.page
    page.goto("/profile")
    page.evaluate("document.querySelector('form[action=\"/profile\"] input[name=_csrf]').remove()")
    page.get_by_label("Display name").fill("After")
    with page.expect_response("**/profile") as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    person.looks_right("portal-csrf-refused")
    page.goto("/profile")
    expect(page.get_by_label("Display name")).to_have_value("Before")
    forged = page.request.post("/logout", form={"_csrf": "not-the-token"})
    assert forged.status == 403


def test_the_profile_stays_readable_while_the_users_api_is_down(
    person: Person, stack: Stack
) -> None:
    register(person, "Stays Visible")
    page = person.page
    stack.processes["users"].terminate()
    stack.processes["users"].wait(10)
    try:
        page.goto("/profile")
        expect(page.get_by_text("The profile service is unavailable right now")).to_be_visible()
        expect(page.get_by_label("Display name")).to_have_value("Stays Visible")
        expect(page.get_by_label("Display name")).to_have_attribute("readonly", "")
        expect(page.get_by_role("button", name="Save")).to_have_count(0)
        person.looks_right("portal-profile-read-only")
    finally:
        stack.start("users")
        wait_until(lambda: _ready(stack.users_url), 30, "the users API back")
    page.goto("/profile")
    expect(page.get_by_role("button", name="Save")).to_be_visible()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

"""``python -m apps.<name>`` starts uvicorn with the service's port and structured logs."""

from __future__ import annotations

from typing import Any

import pytest

import apps.admin.__main__ as admin_main
import apps.auth.__main__ as auth_main
import apps.users.__main__ as users_main
from shared import serve as serve_module


@pytest.mark.parametrize(
    ("module", "env", "port"),
    [
        (auth_main, "AUTH_PORT", 18002),
        (users_main, "USERS_PORT", 18001),
        (admin_main, "ADMIN_PORT", 18003),
    ],
)
def test_main_runs_the_app_on_its_port(
    monkeypatch: pytest.MonkeyPatch, module: Any, env: str, port: int
) -> None:
    runs: list[dict[str, Any]] = []
    services: list[str] = []
    monkeypatch.setenv(env, str(port))
    monkeypatch.setattr(
        serve_module, "configure_logging", lambda settings, service: services.append(service)
    )
    monkeypatch.setattr(module, "create_app", lambda settings: ("app", settings))
    monkeypatch.setattr(
        serve_module.uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw})
    )
    module.main()
    assert len(runs) == 1
    assert runs[0]["port"] == port
    assert runs[0]["app"][0] == "app"
    assert runs[0]["access_log"] is False
    assert services == [module.__name__.split(".")[1]]

"""Typed settings, built once per process from environment variables.

Every field has a localhost default so that a fresh checkout runs against the local
PostgreSQL, Redis and RabbitMQ without any configuration. Entry points call
:meth:`Settings.from_env` once and pass the object down; nothing reads the
environment at import time.

The fields live in groups (``settings.relay.batch_size``, ``settings.passwords.time_cost``);
a component is handed the group it uses. Each field is declared once, in its group, with the
environment variable it comes from. Overrides are flat and keyed by that variable's name in
lower case (``ocr_engine="tesseract"`` sets ``OCR_ENGINE``, i.e. ``settings.ocr.engine``):
:meth:`Settings.from_env`, :meth:`Settings.build` and :meth:`Settings.replace` take them, and
:data:`OVERRIDES` (derived from the groups) says where each one goes.

The package: :mod:`~shared.config.fields` (how a setting is declared and read), one module per
family of groups (:mod:`~shared.config.stores`, :mod:`~shared.config.serving`,
:mod:`~shared.config.processing`, :mod:`~shared.config.security`) and
:mod:`~shared.config.settings`, which puts them together. Import from here.
"""

from shared.config.fields import DATABASES, secret_value
from shared.config.processing import (
    OcrSettings,
    ProfileSettings,
    RelaySettings,
    SagaSettings,
    WorkerSettings,
)
from shared.config.security import (
    LoginSettings,
    OperatorSettings,
    PasswordSettings,
    TokenSettings,
    argon2_meets_owasp,
)
from shared.config.serving import (
    FrontendSettings,
    HttpSettings,
    ObservabilitySettings,
    UploadSettings,
)
from shared.config.settings import (
    EXIT_CONFIGURATION,
    GROUPS,
    OVERRIDES,
    Settings,
    refuse,
    settings_or_exit,
)
from shared.config.stores import BrokerSettings, DatabaseSettings, RedisSettings, TlsSettings

__all__ = [
    "DATABASES",
    "EXIT_CONFIGURATION",
    "GROUPS",
    "OVERRIDES",
    "BrokerSettings",
    "DatabaseSettings",
    "FrontendSettings",
    "HttpSettings",
    "LoginSettings",
    "ObservabilitySettings",
    "OcrSettings",
    "OperatorSettings",
    "PasswordSettings",
    "ProfileSettings",
    "RedisSettings",
    "RelaySettings",
    "SagaSettings",
    "Settings",
    "TlsSettings",
    "TokenSettings",
    "UploadSettings",
    "WorkerSettings",
    "argon2_meets_owasp",
    "refuse",
    "secret_value",
    "settings_or_exit",
]

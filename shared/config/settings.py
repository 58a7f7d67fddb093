"""The process's settings: one frozen group per concern, built from the environment."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, NoReturn, get_type_hints

from shared.config.fields import coerce, field_docs, links
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
)
from shared.config.serving import (
    FrontendSettings,
    HttpSettings,
    ObservabilitySettings,
    UploadSettings,
)
from shared.config.stores import BrokerSettings, DatabaseSettings, RedisSettings, TlsSettings
from shared.tls import with_default_ca


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Process configuration: one frozen group per concern (see the module docstring)."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    ocr: OcrSettings = field(default_factory=OcrSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    passwords: PasswordSettings = field(default_factory=PasswordSettings)
    login: LoginSettings = field(default_factory=LoginSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    saga: SagaSettings = field(default_factory=SagaSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    frontends: FrontendSettings = field(default_factory=FrontendSettings)

    def __post_init__(self) -> None:
        # Every service URL (database, Redis, each RabbitMQ node) trusts TLS_CA_FILE unless it
        # names its own CA; a URL that would not verify is refused here.
        for name, group in self.groups().items():
            urls = {f.name: self._with_ca(f, getattr(group, f.name)) for f in links(group)}
            if urls:
                object.__setattr__(self, name, dataclasses.replace(group, **urls))

    def _with_ca(self, f: Field[Any], url: str) -> str:
        # RABBITMQ_URL lists nodes; a PostgreSQL URL may list hosts but has one query.
        parts = [p.strip() for p in url.split(",")] if f.metadata["link"] == "nodes" else [url]
        return ",".join(with_default_ca(f.metadata["env"], p, self.tls.ca_file) for p in parts)

    def groups(self) -> dict[str, Any]:
        """The groups by attribute name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **overrides: Any) -> Settings:
        """A copy with flat ``overrides`` (keyed as in :data:`OVERRIDES`), validated again."""
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if key not in OVERRIDES:
                raise TypeError(f"unknown setting {key!r} (keys are variable names in lower case)")
            group, name = OVERRIDES[key]
            changes.setdefault(group, {})[name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **c) for g, c in changes.items()}
        return dataclasses.replace(self, **groups)

    def environment(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` build these settings again."""
        return {
            f.metadata["env"]: str(getattr(getattr(self, group), f.name))
            for group, f in self.variables()
        }

    @classmethod
    def build(cls, **overrides: Any) -> Settings:
        """The defaults with flat ``overrides``; the environment is not read."""
        return cls().replace(**overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default: the process environment), then apply the
        flat ``overrides``."""
        environ = os.environ if environ is None else environ
        hints = {group: get_type_hints(kind) for group, kind in GROUPS.items()}
        values: dict[str, Any] = {}
        for group, f in cls.variables():
            name = f.metadata["env"]
            if name in environ:
                values[name.lower()] = coerce(name, environ[name], hints[group][f.name])
        values.update(overrides)
        return cls.build(**values)

    @classmethod
    def variables(cls) -> list[tuple[str, Field[Any]]]:
        """(group, field) of every setting, in declaration order; ``field.metadata["env"]``
        names its variable."""
        return [(group, f) for group, kind in GROUPS.items() for f in fields(kind)]

    @classmethod
    def documented(cls) -> dict[str, list[tuple[str, str, str]]]:
        """Per group: (variable, default, description) of every field, for the README table."""
        table: dict[str, list[tuple[str, str, str]]] = {}
        for group, kind in GROUPS.items():
            docs = field_docs(kind)
            table[group] = [
                (f.metadata["env"], repr(f.default), docs.get(f.name, "")) for f in fields(kind)
            ]
        return table




GROUPS: dict[str, type] = {f.name: get_type_hints(Settings)[f.name] for f in fields(Settings)}
"""Each group's class by its attribute name on :class:`Settings`."""

OVERRIDES: dict[str, tuple[str, str]] = {
    f.metadata["env"].lower(): (group, f.name) for group, f in Settings.variables()
}
"""Override key (the variable's name in lower case) -> (group, field): ``relay_batch_size``
-> ``("relay", "batch_size")``."""


EXIT_CONFIGURATION = 2
"""Exit status of a process whose settings cannot work (one line on stderr, no traceback)."""


def settings_or_exit(process: str) -> Settings:
    """:meth:`Settings.from_env` for an entry point: a malformed variable, a CA bundle that
    is not there or a TLS URL that would not verify ends ``process`` with one line, exit 2."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        refuse(process, exc)


def refuse(process: str, exc: Exception) -> NoReturn:
    """End ``process`` on a configuration error (see :func:`settings_or_exit`)."""
    sys.stderr.write(f"{process}: configuration error: {exc}\n")
    raise SystemExit(EXIT_CONFIGURATION) from None

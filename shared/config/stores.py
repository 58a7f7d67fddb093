"""Where the data lives: the databases, the broker, Redis, and the CA their TLS links trust."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config.fields import DATABASES, env, link, links, nodes, secret_value
from shared.db_url import url_password, with_password


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The three logical databases: their URLs and roles, each process's pools, migrate's admin."""

    auth_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/authdb",
        metadata=link("AUTH_DATABASE_URL"),
    )
    """authdb: users, refresh tokens, sagas, outbox, inbox."""

    users_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/apidb",
        metadata=link("USERS_DATABASE_URL"),
    )
    """apidb: profiles, outbox, inbox."""

    admin_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/admindb",
        metadata=link("ADMIN_DATABASE_URL"),
    )
    """admindb: documents, blobs, OCR results, outbox, inbox."""

    operator_audit_url: str = field(default="", metadata=link("AUDIT_DATABASE_URL"))
    """Where the admin API (and console) append operator actions (authdb's ``operator_audit``);
    empty: ``AUTH_DATABASE_URL``. With least-privilege roles, a role that may only insert into
    and read that table."""

    pool_size: int = field(default=10, metadata=env("DB_POOL_SIZE"))
    """Connections per database pool in each process."""

    # --- database roles (least privilege; docs/deployment.md, "Database roles") ------------
    migrate_url: str = field(default="", metadata=link("MIGRATE_DATABASE_URL"))
    """The administrator connection of ``amsctl db migrate`` (a superuser, or a role with
    CREATEDB and CREATEROLE), e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``.
    Set, migrate creates the databases, a login role per service named by the user of
    ``AUTH_``/``USERS_``/``ADMIN_``/``AUDIT_DATABASE_URL`` (password from that URL or its
    ``*_PASSWORD_FILE``) and ``DATABASE_OWNER_ROLE``, and grants each service only DML on its
    own database. Empty: no roles are managed; migrate connects with the service URLs. Give it
    to migrate only: no running process needs it."""

    migrate_password_file: str = field(
        default="", metadata=env("MIGRATE_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``MIGRATE_DATABASE_URL`` (a mounted secret), used when
    the URL carries none."""

    owner_role: str = field(default="ams_owner", metadata=env("DATABASE_OWNER_ROLE"))
    """The role (NOLOGIN) that owns the three databases and every table in them; migrations
    run as it (``SET ROLE``), nothing else does."""

    auth_password_file: str = field(default="", metadata=env("AUTH_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``AUTH_DATABASE_URL``'s user, used when the URL carries
    none (also read by migrate to set that role's password)."""

    users_password_file: str = field(default="", metadata=env("USERS_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``USERS_DATABASE_URL``'s user (as above)."""

    admin_password_file: str = field(default="", metadata=env("ADMIN_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``ADMIN_DATABASE_URL``'s user (as above)."""

    operator_audit_password_file: str = field(
        default="", metadata=env("AUDIT_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``AUDIT_DATABASE_URL``'s user (as above)."""

    def __post_init__(self) -> None:
        # Each ``*_DATABASE_URL`` gets the password of its ``*_DATABASE_PASSWORD_FILE``.
        for f in links(self):
            path = getattr(self, f.name.removesuffix("_url") + "_password_file")
            if path:
                url, setting = getattr(self, f.name), f.metadata["env"]
                # A password written in the URL wins, as a value wins over its file.
                password = secret_value(
                    url_password(url), path, setting.removesuffix("_URL") + "_PASSWORD"
                )
                object.__setattr__(self, f.name, with_password(url, password, setting))

    @property
    def audit_url(self) -> str:
        """The database URL that holds the operator audit table."""
        return self.operator_audit_url or self.auth_url

    def url(self, database: str) -> str:
        """URL of one logical database (``authdb``, ``apidb`` or ``admindb``)."""
        urls = {"authdb": self.auth_url, "apidb": self.users_url, "admindb": self.admin_url}
        try:
            return urls[database]
        except KeyError:
            raise ValueError(
                f"unknown database {database!r}; expected one of {', '.join(DATABASES)}"
            ) from None


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """RabbitMQ: the AMQP nodes and their management API."""

    url: str = field(
        default="amqp://guest:guest@127.0.0.1:5672/", metadata=nodes("RABBITMQ_URL")
    )
    """AMQP URL; the vhost is the path (``/`` is the default vhost). A cluster: the nodes'
    URLs separated by commas; each process starts at a random node of the list (clients
    spread over the cluster), takes the first that answers from there, and fails over to
    the next one when its node goes away."""

    management_url: str = field(
        default="http://guest:guest@127.0.0.1:15672/", metadata=env("RABBITMQ_MANAGEMENT_URL")
    )
    """Management HTTP API, used for policies and vhost administration; several nodes'
    URLs separated by commas are tried in order."""

    operator_user: str = field(default="operator", metadata=env("RABBITMQ_OPERATOR_USER"))
    """The broker user of ``amsctl dlq`` and the console (they connect with ``RABBITMQ_URL``:
    put this user's credentials there). ``amsctl topology apply`` gives it, in the vhost, no
    configure permission, write on the ``replay`` exchange only and read on ``*.dlq`` only
    (docs/operations.md); empty: leave users alone."""

    operator_password: str = field(
        default="", metadata=env("RABBITMQ_OPERATOR_PASSWORD"), repr=False
    )
    """Set: ``amsctl topology apply`` creates (or updates) the operator user with this password
    and the ``monitoring`` tag. Empty: the user must exist already (a broker's boot-time
    definitions); only its permissions are written."""

    operator_password_file: str = field(
        default="", metadata=env("RABBITMQ_OPERATOR_PASSWORD_FILE")
    )
    """A file holding ``RABBITMQ_OPERATOR_PASSWORD`` (a mounted secret); used when that is empty."""

    def operator_secret(self) -> str:
        """``RABBITMQ_OPERATOR_PASSWORD`` or the contents of ``RABBITMQ_OPERATOR_PASSWORD_FILE``."""
        return secret_value(
            self.operator_password, self.operator_password_file, "RABBITMQ_OPERATOR_PASSWORD"
        )


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """Redis: sessions, the token denylist, rate limits and caches."""

    url: str = field(default="redis://127.0.0.1:6379/0", metadata=link("REDIS_URL"))
    """Redis for sessions, the token denylist, rate limits and caches."""

    key_prefix: str = field(default="ams:", metadata=env("REDIS_KEY_PREFIX"))
    """Prefix of every Redis key (sessions, denylist, rate limits, caches)."""


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """What every outgoing TLS link trusts."""

    ca_file: str = field(default="", metadata=env("TLS_CA_FILE"))
    """PEM bundle of the certificate authorities every TLS link trusts unless its URL names its
    own: PostgreSQL URLs with ``sslmode=verify-full`` (or ``verify-ca``; own: ``sslrootcert=``),
    ``rediss://`` (own: ``ssl_ca_certs=``), ``amqps://`` (own: ``cafile=``) and an https
    ``AUTH_JWKS_URL``. Empty: the system's trust store. Certificates are always verified, and
    host names too (but with ``verify-ca``); docs/deployment.md, "TLS"."""

"""Every setting the app reads, in one pydantic-settings model.

Values come from the process environment (which is where the Functions host puts `local.settings.json`'s
`Values` and Azure's app settings). Processes the host does not start (the CLI, the local host) read
`local.settings.json` themselves with `load_local_settings`, as the host does: what the environment has wins.
A bad or missing value fails at start with a message naming the setting.
docs/SETTINGS.md and `local.settings.json.example` list the same names; a test keeps them in step.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import EmailStr, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EmailList = Annotated[list[EmailStr], NoDecode]


class SettingsError(RuntimeError):
    """Raised at start when a setting is missing or invalid; the message names each bad setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, env_ignore_empty=True)

    # --- storage: a connection string locally, identity-based in Azure -------------------------------------
    storage_connection: SecretStr | None = Field(None, alias="AzureWebJobsStorage")
    storage_account_name: str | None = Field(None, alias="AzureWebJobsStorage__accountName")
    storage_table_uri: str | None = Field(None, alias="AzureWebJobsStorage__tableServiceUri")
    storage_queue_uri: str | None = Field(None, alias="AzureWebJobsStorage__queueServiceUri")
    storage_client_id: str | None = Field(None, alias="AzureWebJobsStorage__clientId")

    # --- engine --------------------------------------------------------------------------------------------
    check_concurrency: int = Field(100, alias="CHECK_CONCURRENCY", ge=1, le=5000)
    # A timer run starts no new check after this many seconds (host.json's functionTimeout is 10 minutes); what
    # it did not reach is recorded as "not checked" and waits for its next slot.
    tick_budget_seconds: int = Field(240, alias="TICK_BUDGET_SECONDS", ge=10, le=540)
    # Scale-out (docs/ARCHITECTURE.md "Fan-out"): a timer tick with at least FANOUT_THRESHOLD due monitors hands
    # them to the CHECKS_QUEUE in batches of FANOUT_BATCH_SIZE, checked by the queue worker on as many instances
    # as the platform scales to; below it (and with 0) the tick checks them itself.
    fanout_threshold: int = Field(2000, alias="FANOUT_THRESHOLD", ge=0)
    fanout_batch_size: int = Field(500, alias="FANOUT_BATCH_SIZE", ge=1, le=500)
    checks_queue: str = Field("monitor-checks", alias="CHECKS_QUEUE", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    # Locations (docs/LOCATIONS.md): this app's name among the deployment's CHECK_LOCATIONS (comma-separated, the
    # same in every region). Empty: one location, as before.
    check_location: str | None = Field(None, alias="CHECK_LOCATION", pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    check_locations: str | None = Field(None, alias="CHECK_LOCATIONS")
    # Networks checks may reach although they are not public (loopback, private, link-local, …): comma-separated
    # CIDRs; empty = public addresses only (shared/outbound/guard.py).
    outbound_allow_cidrs: str | None = Field(None, alias="OUTBOUND_ALLOW_CIDRS")
    # The tables and queues of the app's storage account that resource monitors may count (table_count,
    # queue_depth): comma-separated names; empty = none. The app's own tables and queues are never allowed.
    app_metrics_tables: str | None = Field(None, alias="APP_METRICS_TABLES")
    app_metrics_queues: str | None = Field(None, alias="APP_METRICS_QUEUES")
    result_retention_days: int = Field(90, alias="RESULT_RETENTION_DAYS", ge=1, le=3650)
    rollup_retention_days: int = Field(400, alias="ROLLUP_RETENTION_DAYS", ge=1, le=3650)

    # --- e-mail --------------------------------------------------------------------------------------------
    email_enabled: bool = Field(True, alias="GLOBAL_EMAIL_NOTIFICATIONS_ENABLED")
    smtp_host: str | None = Field(None, alias="SMTP_HOST")
    smtp_port: int = Field(587, alias="SMTP_PORT", ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field("starttls", alias="SMTP_SECURITY")
    smtp_username: str | None = Field(None, alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(None, alias="SMTP_PASSWORD")
    smtp_from: EmailStr = Field("monitor@localhost.localdomain", alias="SMTP_FROM")
    smtp_timeout_seconds: float = Field(20.0, alias="SMTP_TIMEOUT_SECONDS", gt=0, le=300)
    smtp_ca_file: str | None = Field(None, alias="SMTP_CA_FILE")
    admin_recipients: EmailList = Field(default_factory=list, alias="ADMIN_EMAIL_RECIPIENTS")
    default_recipients: EmailList = Field(default_factory=list, alias="DEFAULT_EMAIL_RECIPIENTS")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")
    # A delivery that keeps failing transiently is tried again with growing waits (up to this many seconds
    # apart) until the event is this old; then it is failed and the operator is told.
    delivery_max_age_hours: float = Field(24.0, alias="DELIVERY_MAX_AGE_HOURS", gt=0, le=168)
    delivery_retry_max_seconds: int = Field(900, alias="DELIVERY_RETRY_MAX_SECONDS", ge=1, le=3600)

    # --- alerting (shared/notify: channels, grouping, rate cap, acknowledgements) ---------------------------
    # At most this many messages an hour to one channel-recipient; beyond it, changes are folded into one
    # summary at the end of the hour. 0 = no cap.
    alert_rate_limit_per_hour: int = Field(20, alias="ALERT_RATE_LIMIT_PER_HOUR", ge=0, le=10000)
    # Checker errors with one cause are collected this long, then told as one operator notice naming them all;
    # 0 = each is told at once, on its own.
    error_group_seconds: int = Field(60, alias="ERROR_GROUP_SECONDS", ge=0, le=3600)
    # Signs the one-click acknowledgement links in messages; empty = a random key kept in the app's storage.
    ack_signing_key: SecretStr | None = Field(None, alias="ACK_SIGNING_KEY")
    ack_link_hours: float = Field(24.0, alias="ACK_LINK_HOURS", gt=0, le=720)

    # --- the public status page (shared/web/status_page.py) -------------------------------------------------
    status_page_title: str = Field("System status", alias="STATUS_PAGE_TITLE", min_length=1, max_length=100)
    # Put in an <img> for the visitor's browser to load (the app never fetches it): https, or a path on this site.
    status_page_logo_url: str | None = Field(None, alias="STATUS_PAGE_LOGO_URL", max_length=2000)

    @field_validator("status_page_title")
    @classmethod
    def _page_title(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value) or not value.strip():
            raise ValueError("must be one line of text")
        return value.strip()

    @field_validator("status_page_logo_url")
    @classmethod
    def _logo_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return None
        bad = ValueError("must be an https:// URL or a path on this site starting with / (e.g. "
                         "https://example.com/logo.svg or /static/logo.png)")
        if any(c.isspace() or ord(c) < 32 or c in '\\"<>`' for c in value):
            raise bad
        try:
            parts = urlsplit(value)
        except ValueError:
            raise bad from None
        if parts.scheme:
            if parts.scheme.lower() != "https" or not parts.hostname or "@" in parts.netloc:
                raise bad
        elif not value.startswith("/") or value.startswith("//"):
            raise bad
        return value

    # --- stock (WHMCS) -------------------------------------------------------------------------------------
    # All optional: the app starts without them; a stock monitor's check then ends in ERROR naming them.
    whmcs_api_url: str | None = Field(None, alias="WHMCS_API_URL")
    whmcs_identifier: str | None = Field(None, alias="WHMCS_IDENTIFIER")
    whmcs_secret: SecretStr | None = Field(None, alias="WHMCS_SECRET")
    whmcs_access_key: SecretStr | None = Field(None, alias="WHMCS_ACCESS_KEY")
    whmcs_timeout_seconds: float = Field(20.0, alias="WHMCS_TIMEOUT_SECONDS", gt=0, le=120)

    @field_validator("whmcs_api_url")
    @classmethod
    def _whmcs_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be the http(s) URL of WHMCS's includes/api.php")
        return value

    # --- parts lists (InvenTree) ---------------------------------------------------------------------------
    # All optional: the app starts without them; a parts monitor's check then ends in ERROR naming them.
    inventree_url: str | None = Field(None, alias="INVENTREE_URL")
    inventree_token: SecretStr | None = Field(None, alias="INVENTREE_TOKEN")
    inventree_timeout_seconds: float = Field(15.0, alias="INVENTREE_TIMEOUT_SECONDS", gt=0, le=300)
    inventree_available_field: Literal["unallocated_stock", "in_stock", "total_in_stock"] = Field(
        "unallocated_stock", alias="INVENTREE_AVAILABLE_FIELD")

    @field_validator("inventree_url")
    @classmethod
    def _inventree_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be the http(s) base URL of InvenTree, e.g. https://inventree.example.com")
        value = value.rstrip("/")
        return value[:-4] if value.lower().endswith("/api") else value  # links and /api/… are built from the base

    @field_validator("outbound_allow_cidrs")
    @classmethod
    def _cidrs(cls, value: str | None) -> str | None:
        import ipaddress

        for part in (value or "").replace(";", ",").replace(" ", ",").split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{part.strip()!r} is not a network (e.g. 127.0.0.1/32, 10.0.0.0/8)") from None
        return value

    @field_validator("admin_recipients", "default_recipients", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @property
    def runs_shared_jobs(self) -> bool:
        """Whether this app runs the jobs of the whole deployment (compaction, retention, snapshots, digests): with
        several locations only the first one does (they share one storage account)."""
        return not self.locations or self.check_location == self.locations[0]

    @field_validator("check_locations")
    @classmethod
    def _locations(cls, value: str | None) -> str | None:
        import re

        for part in (value or "").split(","):
            if part.strip() and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", part.strip()):
                raise ValueError(f"{part.strip()!r} is not a location name (lowercase letters, digits and '-', "
                                 "e.g. westeurope)")
        return value

    @property
    def locations(self) -> tuple[str, ...]:
        """Every location of the deployment (CHECK_LOCATIONS, in order, with CHECK_LOCATION among them); () with
        one."""
        named = list(dict.fromkeys(p.strip() for p in (self.check_locations or "").split(",") if p.strip()))
        if self.check_location and self.check_location not in named:
            named.append(self.check_location)
        return tuple(named) if len(named) > 1 else ()  # in their order: the first runs the deployment's own jobs

    @model_validator(mode="after")
    def _storage_and_smtp(self) -> Settings:
        if not (self.storage_connection or self.storage_account_name or self.storage_table_uri):
            raise ValueError(
                "AzureWebJobsStorage: set a connection string (UseDevelopmentStorage=true locally) "
                "or AzureWebJobsStorage__accountName for identity-based access"
            )
        if self.storage_table_uri and not self.storage_queue_uri and not self.storage_account_name:
            raise ValueError("AzureWebJobsStorage__queueServiceUri: required with AzureWebJobsStorage__tableServiceUri")
        if self.email_enabled and not self.smtp_host:
            raise ValueError("SMTP_HOST: required while GLOBAL_EMAIL_NOTIFICATIONS_ENABLED is true")
        if self.check_locations and not self.check_location and len(self.locations) > 1:
            raise ValueError("CHECK_LOCATION: required with several CHECK_LOCATIONS (which one is this app?)")
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD: set both or neither")
        from shared import secrets

        secrets.register_settings(self)  # every SecretStr value is scrubbed from results, events, mails and logs
        secrets.install_log_scrubbing()
        return self


# The names a deployment must define (or may), for docs and the settings cross-checks in tests.
SETTING_NAMES: tuple[str, ...] = tuple(f.alias for f in Settings.model_fields.values() if f.alias)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "__root__")
        msg = item.get("msg", "invalid").removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "invalid settings:\n" + "\n".join(lines)


LOCAL_SETTINGS = "local.settings.json"


def load_local_settings(path: Path | str | None = None) -> Path | None:
    """Put the `Values` of local.settings.json (default: the one in the current folder, the project folder, where
    Core Tools reads it too) into the environment, as the Functions host does; a variable the environment has
    already wins. Other top-level keys (`IsEncrypted`, `Host`, `ConnectionStrings`, `_comment`) are not settings
    and are left alone. Returns the file read, None when there is none; SettingsError when it cannot be used."""
    file = Path(LOCAL_SETTINGS if path is None else path)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is tolerated
    except json.JSONDecodeError as error:
        raise SettingsError(f"{file}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                            "JSON has no comments or trailing commas") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{file}: cannot be read: {error}") from None
    values = data.get("Values", {}) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise SettingsError(f'{file}: expected {{"Values": {{"NAME": "value", …}}}}')
    if data.get("IsEncrypted") is True:
        raise SettingsError(f"{file}: IsEncrypted is true (encrypted by `func settings encrypt`): run "
                            "`func settings decrypt` or set the values in the environment")
    for name, value in values.items():
        if isinstance(value, (dict, list)):
            raise SettingsError(f"{file}: Values.{name} must be a string, not a JSON {type(value).__name__}")
        if value is not None:
            os.environ.setdefault(str(name), ("true" if value else "false") if isinstance(value, bool) else str(value))
    return file


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, validated once. Raises SettingsError naming each bad setting."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None

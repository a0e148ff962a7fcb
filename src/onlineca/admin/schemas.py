"""The REST API's request and response bodies, as pydantic models: the OpenAPI document at
``/api/openapi.json`` is generated from these (and the routes), never written by hand.

Response models describe what ``onlineca.service`` returns; request models bound every string and
number, so a body the service could not take is refused with 422 before it reaches it.  No model
carries a password or an auth string back, except the two made to be shown once
(``CreatedAccount.password``, ``CreatedToken.token``, ``CreatedDevice.auth_string``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "operator", "admin"]
Name = Field(min_length=1, max_length=64)


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """RFC 9457 problem details, with onlineca's error code (errors.CODES) and its fix."""

    type: str = Field(description="urn:onlineca:problem:<CODE>")
    title: str
    status: int
    detail: str
    code: str = Field(description="The stable error code (errors.CODES)")
    hint: str = Field(default="", description="What to do about it")
    hop: str = Field(default="local", description="Where the problem is: device, capf, ra, ca or local")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Every invalid field or CSV line")


# ---- accounts --------------------------------------------------------------------------------

class Me(_Out):
    name: str
    role: Role
    method: str = Field(description="session, token or certificate")
    permissions: list[str]


class Account(_Out):
    name: str
    role: Role
    disabled: bool
    created_at: str
    last_login_at: str | None = None


class AccountCreate(_In):
    name: str = Name
    role: Role
    password: str | None = Field(default=None, min_length=10, max_length=256,
                                 description="Omit to have one generated (returned once)")


class CreatedAccount(_Out):
    account: Account
    password: str | None = Field(default=None, description="The generated password, shown once")


class AccountChange(_In):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=256)
    current_password: str | None = Field(default=None, max_length=256,
                                         description="Needed to change one's own password (not for an admin)")


class Token(_Out):
    id: int
    name: str
    user: str
    prefix: str
    role: Role
    created_at: str
    expires_at: str
    last_used_at: str | None = None
    revoked: bool


class TokenCreate(_In):
    name: str = Name
    role: Role | None = Field(default=None, description="At most the owner's role (default: the owner's)")
    days: int = Field(default=90, ge=1, le=3650)
    user: str | None = Field(default=None, min_length=1, max_length=64,
                             description="Another account (admins only); default: yourself")


class CreatedToken(_Out):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; shown once")
    info: Token


# ---- devices ---------------------------------------------------------------------------------

class LSCSummary(_Out):
    serial: str
    issuer: str | None = None
    not_after: str | None = None


class DeviceOut(_Out):
    name: str
    model: str
    description: str
    profile: str | None = None
    operation: str
    operation_display: str
    operation_completes_by: str | None = Field(default=None, description="YYYY:MM:DD:HH, UTC")
    status: str
    status_display: str
    auth_mode: str
    key_order: str
    rsa_key_size: int
    ec_key_size: int
    overrides: dict[str, Any]
    lsc: LSCSummary | None = None
    renewal_due_at: str | None = None
    renewal_attempts: int
    client_flow: str | None = Field(default=None, description="public or extended: how it spoke at its last session")


class LSCHistoryItem(_Out):
    serial: str
    issuer: str
    state: str
    not_after: str
    installed_at: str | None = None


class DeviceEvent(_Out):
    at: str
    actor: str
    event: str
    detail: str


class DeviceDetail(DeviceOut):
    policy_log: list[str]
    lsc_history: list[LSCHistoryItem]
    events: list[DeviceEvent]


class DevicePage(_Out):
    total: int
    limit: int
    offset: int
    items: list[DeviceOut]


class DeviceSettings(_In):
    """A device's CAPF settings; omitted = unchanged (on create: as the profile says), "" = back to
    the profile."""

    model: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=256)
    profile: str | None = Field(default=None, max_length=64)
    operation: str | None = Field(default=None, max_length=64,
                                  description="No Pending Operation, Install/Upgrade, Delete, Troubleshoot")
    auth_mode: str | None = Field(default=None, max_length=64,
                                  description="By Authentication String, By Null String, By Existing Certificate "
                                              "(Precedence to LSC), By Existing Certificate (Precedence to MIC)")
    auth_string: str | None = Field(default=None, max_length=16, description="4 to 10 digits; never shown back")
    key_order: str | None = Field(default=None, max_length=64,
                                  description="RSA Only, EC Only, EC Preferred RSA Backup")
    rsa_key_size: int | None = Field(default=None, description="512, 1024, 2048, 3072, 4096")
    ec_key_size: int | None = Field(default=None, description="256, 384, 521")
    deadline: str | None = Field(default=None, max_length=32, description="Operation Completes By: YYYY:MM:DD:HH")


class DeviceCreate(DeviceSettings):
    name: str = Field(min_length=1, max_length=64, description="e.g. SEP74A02FC0A675")
    generate_auth_string: bool = Field(default=False, description="By Authentication String without a string: make "
                                                                  "one and return it once")


class CreatedDevice(_Out):
    device: DeviceOut
    auth_string: str | None = Field(default=None, description="The generated auth string, shown once")


class OperationStart(_In):
    operation: str = Field(min_length=1, max_length=64)
    deadline: str | None = Field(default=None, max_length=32, description="YYYY:MM:DD:HH (default: profile's days)")


class BulkAction(_In):
    names: list[str] = Field(min_length=1, max_length=1000)
    action: Literal["operation", "delete"]
    operation: str | None = Field(default=None, max_length=64)
    deadline: str | None = Field(default=None, max_length=32)


class BulkResult(_Out):
    action: str
    count: int
    devices: list[DeviceOut]


class ImportResult(_Out):
    added: list[str]
    updated: list[str]


class LSCItem(_Out):
    serial: str
    issuer: str
    subject: str
    state: str
    not_before: str
    not_after: str
    issued_at: str
    installed_at: str | None = None
    superseded_at: str | None = None


# ---- profiles ------------------------------------------------------------------------------

class Renewal(_Out):
    enabled: bool
    fraction: float
    days_before: int | None = None
    jitter: float


class AutoEnrollment(_Out):
    by_mic: bool
    mic_trust_store: str
    name_pattern: str


class ProfileOut(_Out):
    name: str
    description: str
    auth_mode: str
    key_order: str
    rsa_key_size: int
    ec_key_size: int
    deadline_days: int
    renewal: Renewal
    auto_enrollment: AutoEnrollment
    issuer: str = "online-ca"  # who signs the LSCs: "online-ca" (through the RA) or "capf" (CAPF's own CA)


class ProfileSettings(_In):
    description: str | None = Field(default=None, max_length=256)
    auth_mode: str | None = Field(default=None, max_length=64)
    key_order: str | None = Field(default=None, max_length=64)
    rsa_key_size: int | None = None
    ec_key_size: int | None = None
    deadline_days: int | None = Field(default=None, ge=1, le=365)
    renewal_enabled: bool | None = None
    renewal_fraction: float | None = Field(default=None, gt=0, lt=1)
    renewal_days_before: int | None = Field(default=None, ge=1, le=36500)
    renewal_jitter: float | None = Field(default=None, ge=0, le=0.5)
    auto_enroll_mic: bool | None = None
    mic_trust_store: str | None = Field(default=None, max_length=1024)
    auto_enroll_name_pattern: str | None = Field(default=None, max_length=128)
    issuer: str | None = Field(default=None, max_length=16)


class ProfileCreate(ProfileSettings):
    name: str = Name


# ---- reports -------------------------------------------------------------------------------

class StatusCount(_Out):
    status: str
    display: str
    code: int
    devices: int


class ExpiringItem(_Out):
    name: str
    lsc_serial: str | None = None
    lsc_not_after: str | None = None
    expired: bool
    renewal: bool
    status: str


class OverdueItem(_Out):
    name: str
    reasons: list[str]
    operation: str
    status: str
    operation_completes_by: str | None = None
    lsc_not_after: str | None = None
    renewal_attempts: int
    renewal_last_error: str


class StaleItem(_Out):
    name: str
    serial: str
    issuer: str
    issued_at: str | None = None
    not_after: str | None = None


class CAPFReport(_Out):
    generated_at: str
    by_status: list[StatusCount]
    expiring: list[ExpiringItem]
    overdue: list[OverdueItem]
    stale: list[StaleItem]


class WeekCount(_Out):
    week_of: str
    lscs: int


class DayCount(_Out):
    day: str
    installed: int
    renewed: int
    failed: int


class CertificateInfo(_Out):
    tier: str
    certificate: str
    path: str | None = None
    subject: str | None = None
    not_after: str | None = None
    days_left: int | None = None
    status: str


class Dashboard(_Out):
    generated_at: str
    devices: int
    pending: int
    by_status: list[StatusCount]
    expiring_per_week: list[WeekCount]
    renewals_per_day: list[DayCount]
    pending_ca_requests: int
    certificates: list[CertificateInfo]
    diagnose: DiagnoseReport | None = None


# ---- CA requests ---------------------------------------------------------------------------

class CARequestOut(_Out):
    req_id: int
    requester: str
    template: str
    subject: str
    disposition: str
    hresult: str
    message: str
    serial: str | None = None
    submitted_at: str | None = None
    resolved_by: str
    revoked: str | None = None  # the revocation's reason, when the certificate was revoked


class CARequestDetail(CARequestOut):
    not_after: str | None = None
    revoked_at: str | None = None
    resolved_at: str | None = None
    certificate_pem: str | None = None


class CARequestPage(_Out):
    total: int
    limit: int
    offset: int
    items: list[CARequestOut]


class CAResolved(CARequestDetail):
    outcome: str


class CARevokeIn(_In):
    reason: str = Field(default="unspecified", max_length=32,
                        description="RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, "
                                    "superseded, cessationOfOperation, privilegeWithdrawn, aACompromise")


class LSCRevocationOut(_Out):
    device: str
    serial: str
    issuer: str
    reason: str
    why: str
    state: str
    requested_at: str
    attempts: int
    last_error: str
    done_at: str | None = None
    certutil: str


# ---- diagnose, logs, config --------------------------------------------------------------------

class Check(_Out):
    name: str
    hop: str
    status: str
    elapsed_ms: int
    detail: str


class Finding(_Out):
    code: str
    severity: str
    hop: str
    message: str
    fix: str
    evidence: dict[str, Any]


class DiagnoseReport(_Out):
    generated: str
    ok: bool
    worst: str
    errors: int
    warnings: int
    checks: list[Check]
    findings: list[Finding]
    ran_at: str | None = None
    ran_by: str | None = None


class DiagnoseRun(_In):
    hops: list[Literal["capf", "ra", "ca"]] | None = Field(default=None, max_length=3)


class TimelineEvent(_Out):
    time: str | None = None
    tier: str
    source: str
    line: int
    text: str
    req_id: int | None = None
    code: str | None = None
    cause: str | None = None


class Timeline(_Out):
    device: str
    utc_offset: str
    files: list[str]
    req_ids: list[int]
    events: list[TimelineEvent]


class Analysis(_Out):
    ok: bool
    files: list[str]
    unreadable: dict[str, str]
    causes: list[dict[str, Any]]
    hits: list[dict[str, Any]]
    healthy_records: int


class ConfigOut(_Out):
    path: str | None = None
    config: dict[str, Any] = Field(description="Every section, secrets shown as '***' when set")


class ConfigChange(_In):
    """``{section: {key: value}}``; a secret given as "" or "***" keeps its value."""

    changes: dict[str, dict[str, Any]] = Field(min_length=1, max_length=8)


class OnlineCA(_Out):
    connector: Literal["certsrv", "local"]
    ca_url: str
    ca_auth: Literal["basic", "ntlm", "cert"]
    ca_user: str
    ca_password_set: bool
    template: str
    trust_store: str
    connect_timeout: float
    login_timeout: float
    enroll_timeout: float


class OnlineCAChange(_In):
    """The online CA's settings ([ra]); an omitted or empty password keeps the configured one."""

    connector: Literal["certsrv", "local"] | None = None
    ca_url: str | None = Field(default=None, min_length=8, max_length=512, pattern=r"^https://")
    ca_auth: Literal["basic", "ntlm", "cert"] | None = None
    ca_user: str | None = Field(default=None, max_length=256)
    ca_password: str | None = Field(default=None, max_length=256)
    template: str | None = Field(default=None, min_length=1, max_length=256)
    trust_store: str | None = Field(default=None, max_length=1024)
    connect_timeout: float | None = Field(default=None, gt=0, le=600)
    login_timeout: float | None = Field(default=None, gt=0, le=600)
    enroll_timeout: float | None = Field(default=None, gt=0, le=600)


# ---- audit ---------------------------------------------------------------------------------

class AuditEntry(_Out):
    id: int
    at: str
    actor: str
    role: str
    source: str
    address: str
    action: str
    target: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AuditPage(_Out):
    total: int
    limit: int
    offset: int
    items: list[AuditEntry]


class When(_In):
    at: dt.datetime


Dashboard.model_rebuild()

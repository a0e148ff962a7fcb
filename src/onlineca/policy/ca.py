"""The CA's request policy, sans-I/O: which template, may this user enroll, do the key and names
pass; a typed ``Decision`` out.

Values in (the templates, the requester's name, the ``CertAttrib`` values, the parsed request),
a ``Decision`` out: issue, or hold for a certificate manager; a denial is a ``RequestRefused``
with the HRESULT and the disposition message AD CS would show (``proto.certsrv.hresults``).
Reading the submitted text is ``proto.certsrv.server``'s job.  What a template must say is the
``Template`` protocol below; the CA passes its configured templates in.  This module never signs,
never touches the database and never does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from cryptography import x509

from onlineca import pki
from onlineca.errors import RequestRefused
from onlineca.proto.certsrv.hresults import (
    CERTSRV_E_BAD_REQUESTSUBJECT,
    CERTSRV_E_KEY_LENGTH,
    CERTSRV_E_NO_CERT_TYPE,
    CERTSRV_E_TEMPLATE_DENIED,
    CERTSRV_E_UNSUPPORTED_CERT_TYPE,
    E_INVALIDARG,
    NTE_BAD_ALGID,
    policy_denial,
)

__all__ = ["Decision", "Template", "decide", "find_template", "may_enroll", "offered_templates", "san_values",
           "subject_text"]


class Template(Protocol):
    """What the policy reads of a certificate template (``config.TemplateConfig`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def enroll(self) -> Sequence[str]: ...  # users allowed to enroll; "*" is everyone
    @property
    def allowed_key_types(self) -> Sequence[str]: ...  # "rsa", "ec"
    @property
    def min_rsa_bits(self) -> int: ...
    @property
    def min_ec_bits(self) -> int: ...
    @property
    def subject_from_request(self) -> bool: ...  # else CN=<requester> (AD CS: "build from AD information")
    @property
    def sans_from_request(self) -> bool: ...  # else the request's subjectAltName is ignored
    @property
    def allowed_subjects(self) -> Sequence[str]: ...  # regular expressions on "CN=...,O=..."; empty: any
    @property
    def allowed_sans(self) -> Sequence[str]: ...  # regular expressions on each subjectAltName value; empty: any
    @property
    def manager_approval(self) -> bool: ...


T = TypeVar("T", bound=Template)


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What to do with a well-formed request: ``issue`` or ``pending`` (a denial raises)."""

    template: T
    action: Literal["issue", "pending"]
    subject: x509.Name
    sans: Sequence[x509.GeneralName] = field(default_factory=tuple)


def subject_text(name: x509.Name) -> str:
    """A subject as the template patterns see it: ``CN=SEP74A02FC0A675,O=Example`` (the RDNs in
    the request's order, comma-separated)."""
    return ",".join(pki.name_to_slash(name).lstrip("/").split("/")) if name.rdns else ""


def san_values(sans: Sequence[x509.GeneralName]) -> list[str]:
    """Each subjectAltName as text: the DNS name, IP address, e-mail or URI; other kinds by type."""
    out = []
    for san in sans:
        value = getattr(san, "value", None)
        out.append(str(value) if isinstance(value, (str, int)) or hasattr(value, "compressed") else
                   f"{type(san).__name__}:{value!r}")
    return out


def _fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text, flags=re.IGNORECASE) is not None
    except re.error:
        return False  # a broken pattern allows nothing (config validation names it)


def may_enroll(template: Template, user: str) -> bool:
    allowed = {u.lower() for u in template.enroll}
    return "*" in allowed or user.lower() in allowed


def offered_templates(templates: Sequence[T], user: str) -> list[T]:
    """The templates this user may enroll for, as certrqxt.asp lists them."""
    return [t for t in templates if may_enroll(t, user)]


def find_template(templates: Sequence[T], name: str) -> T | None:
    wanted = name.strip().lower()
    for t in templates:
        if t.name.lower() == wanted:
            return t
    return None


def decide(templates: Sequence[T], user: str, attributes: Mapping[str, str],
           csr: x509.CertificateSigningRequest) -> Decision[T]:
    """Apply the template named in ``attributes`` (``CertAttrib``, lower-cased names) to ``csr``
    for ``user``; deny with RequestRefused."""
    name = attributes.get("certificatetemplate", "")
    if not name:
        raise RequestRefused(CERTSRV_E_NO_CERT_TYPE, policy_denial(
            CERTSRV_E_NO_CERT_TYPE, "The request contains no certificate template information."))
    template = find_template(templates, name)
    if template is None:
        raise RequestRefused(CERTSRV_E_UNSUPPORTED_CERT_TYPE, policy_denial(
            CERTSRV_E_UNSUPPORTED_CERT_TYPE, "The request was for a certificate template that is not "
            f"supported by the Active Directory Certificate Services policy: {name}."))
    if not may_enroll(template, user):
        raise RequestRefused(CERTSRV_E_TEMPLATE_DENIED, policy_denial(
            CERTSRV_E_TEMPLATE_DENIED, "The permissions on the certificate template do not allow the "
            "current user to enroll for this type of certificate."))
    try:
        key_type, bits = pki.key_spec(csr.public_key())
    except Exception:
        key_type, bits = "", 0
    if key_type not in template.allowed_key_types:
        raise RequestRefused(NTE_BAD_ALGID, policy_denial(
            NTE_BAD_ALGID, f"The template {template.name} does not allow {key_type or 'this'} keys "
            f"(allowed: {', '.join(template.allowed_key_types)})."))
    minimum = template.min_rsa_bits if key_type == "rsa" else template.min_ec_bits
    if bits < minimum:
        raise RequestRefused(CERTSRV_E_KEY_LENGTH, policy_denial(
            CERTSRV_E_KEY_LENGTH, "The public key does not meet the minimum size required by the "
            f"specified certificate template ({key_type.upper()} {bits} < {minimum} bits)."))
    subject = csr.subject if template.subject_from_request else pki.parse_name(f"CN={user}")
    sans_ext = pki.csr_sans(csr) if template.sans_from_request else None
    sans = tuple(sans_ext) if sans_ext is not None else ()
    if template.subject_from_request and template.allowed_subjects:
        text = subject_text(subject)
        if not any(_fullmatch(pattern, text) for pattern in template.allowed_subjects):
            raise RequestRefused(CERTSRV_E_BAD_REQUESTSUBJECT, policy_denial(
                CERTSRV_E_BAD_REQUESTSUBJECT, f"The subject {text[:200]} is not one the template "
                f"{template.name} allows."))
    if template.allowed_sans:
        for value in san_values(sans):
            if not any(_fullmatch(pattern, value) for pattern in template.allowed_sans):
                raise RequestRefused(CERTSRV_E_BAD_REQUESTSUBJECT, policy_denial(
                    CERTSRV_E_BAD_REQUESTSUBJECT, f"The subject alternative name {value[:200]} is not one the "
                    f"template {template.name} allows."))
    if not subject.rdns and not sans:
        raise RequestRefused(E_INVALIDARG, policy_denial(
            E_INVALIDARG, "The request has neither a subject name nor a subject alternative name."))
    return Decision(template, "pending" if template.manager_approval else "issue", subject, sans)

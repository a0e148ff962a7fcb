"""CAPF's revocation pass: the LSCs in the revocation queue get revoked.

Each maintenance pass takes the ``pending`` rows of ``store.lsc_revocations`` (row leases: several
CAPF nodes never send one twice) and, by who issued the LSC:

- our CA, ``[capf] ca_revoke_url`` set: ``POST`` to the CA's revoke endpoint
  (``/certsrv/onlineca/revoke``, Basic with ``ca_revoke_user``/``ca_revoke_password``, else the
  RA account, TLS verified against ``ca_revoke_trust_store``, else ``ra_trust_store``).  200:
  ``revoked`` (the ``lsc`` row too).  A 404 that is not the endpoint's JSON (the CA has no such
  endpoint: an AD CS) or the endpoint's "unknown certificate": ``manual``.  Anything else (the CA
  down, the account refused or not in ``[ca] revokers``): tried again with a backoff, the error
  kept in the row and logged.
- no ``ca_revoke_url`` (a real AD CS: web enrollment has no revoke page): ``manual``, reported by
  ``onlineca capf revocations list``, its CSV and the console, with the ``certutil -revoke`` line.
- CAPF's own CA (the ``capf`` issuer): CAPF revokes it itself, in its own CRL
  (``<data>/capf/ca/capf-ca.crl``, served at ``/capf-ca.crl`` by CAPF's metrics server).

This module talks HTTP to the CA and writes CAPF's CRL; it never logs the password.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from onlineca import pki
from onlineca.config import CAPFConfig
from onlineca.errors import OnlineCAError
from onlineca.infra import files, tls
from onlineca.pki import revocation as rev
from onlineca.store import lsc_revocations as queue
from onlineca.store.db import Database
from onlineca.store.revocation_models import LSCRevocation

log = logging.getLogger("onlineca.capf.revocation")

BACKOFF_BASE = dt.timedelta(minutes=5)
BACKOFF_MAX = dt.timedelta(hours=6)
CAPF_CRL_DAYS = 7
CAPF_CRL_NAME = "capf-ca.crl"
AD_CS_WHY = ("no [capf] ca_revoke_url: the CA's web enrollment has no revoke page (AD CS); revoke it at the CA "
             "(certutil -revoke SERIAL REASON, or the Certification Authority console), then "
             "'onlineca capf revocations done SERIAL'")


@dataclass
class PassResult:
    revoked: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _backoff(attempts: int) -> dt.timedelta:
    return min(BACKOFF_MAX, BACKOFF_BASE * (1 << min(max(attempts - 1, 0), 20)))


class LSCRevoker:
    """Revokes the queued LSCs of one CAPF node."""

    def __init__(self, cfg: CAPFConfig, db: Database, node_id: str, *, capf_ca_dir: Path | None = None) -> None:
        self.cfg, self.db, self.node_id = cfg, db, node_id
        self.capf_ca_dir = capf_ca_dir
        self._session: aiohttp.ClientSession | None = None

    @property
    def owner(self) -> str:
        return f"revoker:{self.node_id}"

    def _capf_ca_subject(self) -> str | None:
        if self.capf_ca_dir is None or not (self.capf_ca_dir / "capf-ca.pem").exists():
            return None
        try:
            return pki.load_certificate((self.capf_ca_dir / "capf-ca.pem").read_bytes()).subject.rfc4514_string()
        except OnlineCAError:
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            store = self.cfg.ca_revoke_trust_store or self.cfg.ra_trust_store
            anchors = files.load_trust_store(store).certs if store else None
            ctx = tls.client_context(list(anchors) if anchors is not None else None)
            user = self.cfg.ca_revoke_user or self.cfg.ra_user
            password = (self.cfg.ca_revoke_password.get_secret_value() or self.cfg.ra_password.get_secret_value())
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=self.cfg.enroll_timeout),
                headers={"User-Agent": "Mozilla/5.0 (onlineca CAPF revocation)", "Authorization": f"Basic {basic}"})
        return self._session

    async def run_once(self, now: dt.datetime | None = None) -> PassResult:
        """Take the due pending rows and revoke each (see the module's description)."""
        now = now or dt.datetime.now(dt.UTC)
        result = PassResult()
        ids = await asyncio.to_thread(queue.claim, self.db, self.owner, now=now)
        if not ids:
            return result
        capf_subject = self._capf_ca_subject()
        own: list[tuple[int, str]] = []
        for row_id in ids:
            row = await asyncio.to_thread(self._row, row_id)
            if capf_subject is not None and row.issuer == capf_subject:
                own.append((row_id, row.serial))
                continue
            if not self.cfg.ca_revoke_url:
                await asyncio.to_thread(self._manual, row_id, AD_CS_WHY)
                result.manual.append(row.serial)
                continue
            outcome, detail = await self._ask_ca(row)
            if outcome == "revoked":
                await asyncio.to_thread(self._revoked, row_id, detail)
                result.revoked.append(row.serial)
                log.info("%s: LSC serial %s revoked by the CA (%s)", row.device_name, row.serial, row.reason)
            elif outcome == "manual":
                await asyncio.to_thread(self._manual, row_id, detail)
                result.manual.append(row.serial)
                log.warning("%s: LSC serial %s must be revoked by an administrator: %s", row.device_name, row.serial,
                            detail)
            else:
                await asyncio.to_thread(self._failed, row_id, detail, now)
                result.failed.append(row.serial)
                log.error("%s: revoking LSC serial %s failed: %s -- fix: Check [capf] ca_revoke_url, its account "
                          "(listed in the CA's [ca] revokers) and trust store.", row.device_name, row.serial, detail)
        if own:
            await asyncio.to_thread(self._revoke_own, [i for i, _ in own], now)
            result.revoked.extend(serial for _, serial in own)
        return result

    # ---- our CA's endpoint ---------------------------------------------------------------------

    async def _ask_ca(self, row: LSCRevocation) -> tuple[str, str]:
        """("revoked" | "manual" | "failed", detail)."""
        try:
            async with self._client().post(self.cfg.ca_revoke_url,
                                           data={"serial": row.serial, "reason": row.reason}) as resp:
                text = await resp.text(errors="replace")
                is_json = resp.content_type == "application/json"
                if resp.status == 200 and is_json:
                    return "revoked", f"by the CA at {self.cfg.ca_revoke_url}"
                if resp.status == 404 and not is_json:
                    return "manual", (f"the CA at {self.cfg.ca_revoke_url} has no revoke endpoint (404: not an "
                                      "onlineca CA?); revoke it at the CA")
                if resp.status == 404:
                    return "manual", f"the CA does not know this certificate ({text[:200]}); revoke it at its issuer"
                return "failed", f"HTTP {resp.status} from {self.cfg.ca_revoke_url}: {text[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return "failed", f"{type(exc).__name__}: {exc}"

    # ---- database steps (worker threads) -------------------------------------------------------

    def _row(self, row_id: int) -> LSCRevocation:
        with self.db.session() as s:
            return queue.get(s, row_id)

    def _revoked(self, row_id: int, detail: str) -> None:
        with self.db.session() as s:
            queue.record_revoked(s, queue.get(s, row_id), by=f"capf:{self.node_id}", detail=detail)

    def _manual(self, row_id: int, why: str) -> None:
        with self.db.session() as s:
            queue.record_manual(s, queue.get(s, row_id), why, actor=f"capf:{self.node_id}")

    def _failed(self, row_id: int, error: str, now: dt.datetime) -> None:
        with self.db.session() as s:
            row = queue.get(s, row_id)
            queue.record_failure(s, row, error, now + _backoff(row.attempts + 1))

    # ---- CAPF's own CA -------------------------------------------------------------------------

    def _revoke_own(self, ids: list[int], now: dt.datetime) -> None:
        with self.db.session() as s:
            for row_id in ids:
                queue.record_revoked(s, queue.get(s, row_id), by=f"capf:{self.node_id}",
                                     detail="in CAPF's own CRL", now=now)
        self.publish_capf_crl(now)

    def publish_capf_crl(self, now: dt.datetime | None = None) -> Path | None:
        """CAPF's own CA's CRL (DER) with every LSC of it revoked and not expired; None without it."""
        if self.capf_ca_dir is None or not (self.capf_ca_dir / "capf-ca.key").exists():
            return None
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        cert = pki.load_certificate((self.capf_ca_dir / "capf-ca.pem").read_bytes())
        key = files.read_private_key(self.capf_ca_dir / "capf-ca.key")
        subject = cert.subject.rfc4514_string()
        with self.db.session() as s:
            rows = [r for r in queue.list_revocations(s, queue.REVOKED) if r.issuer == subject]
        entries = [rev.Revoked(int(r.serial, 16), r.done_at or now, r.reason) for r in rows
                   if r.not_after is None or queue._utc(r.not_after) > now]
        crl = rev.build_crl(issuer_cert=cert, issuer_key=key, entries=entries, number=int(now.timestamp()),
                            this_update=now, next_update=now + dt.timedelta(days=CAPF_CRL_DAYS))
        path = self.capf_ca_dir / CAPF_CRL_NAME
        files.write_file(path, rev.crl_der(crl), mode=0o644)
        return path

    def capf_crl_due(self, now: dt.datetime | None = None) -> bool:
        """CAPF's CRL is missing or past a seventh of its life (re-signed each day)."""
        if self.capf_ca_dir is None or not (self.capf_ca_dir / "capf-ca.key").exists():
            return False
        path = self.capf_ca_dir / CAPF_CRL_NAME
        try:
            crl = rev.load_crl(path.read_bytes())
        except (OSError, OnlineCAError):
            return True
        now = now or dt.datetime.now(dt.UTC)
        return now >= crl.last_update_utc + dt.timedelta(days=1)


__all__ = ["AD_CS_WHY", "CAPF_CRL_NAME", "LSCRevoker", "PassResult"]

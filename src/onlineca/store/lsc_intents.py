"""CAPF's enrollment outbox: the one place that holds the SQL of ``lsc_intent``.

An intent is written and committed before CAPF sends a request to the RA, so that a crash at
any point between the CA issuing and CAPF recording leaves a trace: the device, the key
(``key_sha256``: SHA-256 of its SubjectPublicKeyInfo, hex), the request (DER) and its
X-Request-ID.  The answer resolves it in the same transaction that records it (``recorded``,
with the serial), or marks it ``failed`` (a refusal) or ``unanswered`` (no answer: the CA may or
may not have issued).  An intent still ``sent`` or ``unanswered`` is *open*: the device's next
session, or reconciliation (``capf.reconcile``), finds out what became of it and marks it
``adopted`` (the CA's certificate recorded for the device), ``orphaned`` (revocation asked),
``abandoned`` (the CA issued nothing) or ``recorded``.  Functions take a ``Session`` and never
commit; nothing here logs a request or a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from onlineca.policy.capf import as_utc
from onlineca.store.capf_models import LSCIntent

SENT, UNANSWERED = "sent", "unanswered"
RECORDED, FAILED, ADOPTED, ORPHANED, ABANDONED = "recorded", "failed", "adopted", "orphaned", "abandoned"
OPEN = (SENT, UNANSWERED)
STATES = (SENT, UNANSWERED, RECORDED, FAILED, ADOPTED, ORPHANED, ABANDONED)


def key_sha256(spki_der: bytes) -> str:
    """How an intent names its key: SHA-256 of the SubjectPublicKeyInfo DER, hex."""
    return hashlib.sha256(spki_der).hexdigest()


# The session server's statements are Core on the table (no identity map, no unit of work), built
# once so that SQLAlchemy finds their compiled form without building a cache key again.
_INTENT = cast(Table, LSCIntent.__table__)
_I = _INTENT.c
_NOW = bindparam("b_now", type_=_I.updated_at.type)
_NEW = insert(_INTENT).returning(_I.id)
_RESEND = (update(_INTENT).where(_I.id == bindparam("b_id"))
           .values(request_id=bindparam("b_request_id", type_=_I.request_id.type),
                   vouched=bindparam("b_vouched", type_=_I.vouched.type),
                   node=bindparam("b_node", type_=_I.node.type), state=SENT, updated_at=_NOW)
           .returning(_I.id))
_RESOLVE = (update(_INTENT).where(_I.id == bindparam("b_id"))
            .values(state=bindparam("b_state", type_=_I.state.type), updated_at=_NOW))
_RESOLVE_SERIAL = _RESOLVE.values(serial=bindparam("b_serial", type_=_I.serial.type))
_OPEN = (select(_I.id, _I.key_sha256, _I.request_der, _I.request_id, _I.vouched, _I.created_at)
         .where(_I.device_name == bindparam("b_name"), _I.state.in_(OPEN)).order_by(_I.id.desc()).limit(1))
_CLOSE_OLDER = (update(_INTENT)
                .where(_I.device_name == bindparam("b_name"), _I.state.in_(OPEN), _I.id < bindparam("b_keep"))
                .values(state=bindparam("b_state", type_=_I.state.type), updated_at=_NOW))


def intent_sent(s: Session, name: str, *, key: str, request_der: bytes, request_id: str, vouched: bool,
                node: str, now: dt.datetime, intent_id: int | None = None) -> int:
    """Record that the request for ``key`` leaves now; its id.  ``intent_id``: an open intent
    sent again (a session collecting an earlier one's certificate) is that row, sent anew."""
    now = as_utc(now)
    if intent_id is not None:
        found = s.execute(_RESEND, {"b_id": intent_id, "b_request_id": request_id[:64], "b_vouched": vouched,
                                    "b_node": node[:128], "b_now": now}).scalar()
        if found is not None:
            return int(found)
    return int(s.execute(_NEW, {"device_name": name, "key_sha256": key, "request_der": request_der,
                                "request_id": request_id[:64], "vouched": vouched, "node": node[:128],
                                "state": SENT, "created_at": now, "updated_at": now}).scalar_one())


def resolve(s: Session, intent_id: int, state: str, *, serial: str | None = None,
            now: dt.datetime | None = None) -> None:
    """Set what became of an intent (``serial``: the certificate it got, when one)."""
    assert state in STATES
    params: dict[str, Any] = {"b_id": intent_id, "b_state": state, "b_now": as_utc(now or dt.datetime.now(dt.UTC))}
    if serial is None:
        s.execute(_RESOLVE, params)
    else:
        s.execute(_RESOLVE_SERIAL, {**params, "b_serial": serial})


def open_intent(s: Session, name: str) -> Row[int, str, bytes, str, bool, dt.datetime] | None:
    """The device's newest open intent (sent or unanswered), if any: its ``id``, ``key_sha256``,
    ``request_der``, ``request_id``, ``vouched`` and ``created_at``."""
    return s.execute(_OPEN, {"b_name": name}).first()


def close_older(s: Session, name: str, keep: int, state: str = ABANDONED, *, now: dt.datetime | None = None) -> None:
    """Older open intents of the device than ``keep``: ``state`` (a newer request replaced them)."""
    s.execute(_CLOSE_OLDER, {"b_name": name, "b_keep": keep, "b_state": state,
                             "b_now": as_utc(now or dt.datetime.now(dt.UTC))})


def stale(s: Session, *, sent_before: dt.datetime, limit: int = 1000) -> list[LSCIntent]:
    """Open intents nobody waits for any more: unanswered ones, and ones sent before ``sent_before``."""
    before = as_utc(sent_before)
    rows = s.scalars(select(LSCIntent).where(LSCIntent.state.in_(OPEN)).order_by(LSCIntent.id).limit(limit))
    return [r for r in rows if r.state == UNANSWERED or as_utc(r.updated_at) < before]


def open_keys(s: Session, *, since: dt.datetime) -> set[str]:
    """The keys of the intents still open and sent after ``since`` (in flight: not orphans yet)."""
    rows = s.scalars(select(LSCIntent.key_sha256).where(LSCIntent.state.in_(OPEN),
                                                         LSCIntent.updated_at >= as_utc(since)))
    return set(rows)


def counts(s: Session) -> dict[str, int]:
    """How many intents are in each state."""
    out = dict.fromkeys(STATES, 0)
    for state in s.scalars(select(LSCIntent.state)):
        out[state] = out.get(state, 0) + 1
    return out


__all__ = ["ABANDONED", "ADOPTED", "FAILED", "OPEN", "ORPHANED", "RECORDED", "SENT", "STATES", "UNANSWERED",
           "close_older", "counts", "intent_sent", "key_sha256", "open_intent", "open_keys", "resolve", "stale"]

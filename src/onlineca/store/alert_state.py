"""Which alert conditions are firing for which subjects, and when each was last notified: the
SQL behind CAPF's notification deduplication (``capf.alerts``).

``claim_notifications`` takes the firing (condition, subject) pairs of one evaluation and returns
those to notify now: new ones (an INSERT that only one CAPF node wins, by the unique key) and
those last sent longer than ``resend`` ago (a conditional UPDATE that only one node wins); pairs
no longer firing are deleted and returned as resolved.  ``unclaim`` gives a claim back when the
notification could not be sent, so the next pass tries again.  The caller's transaction commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onlineca.store.revocation_models import AlertState

Key = tuple[str, str]  # (condition, subject)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def claim_notifications(s: Session, firing: dict[Key, str], *, now: dt.datetime, resend: dt.timedelta,
                        conditions: set[str]) -> tuple[list[Key], list[Key]]:
    """(to notify as firing, resolved) for this evaluation of ``conditions``; ``firing`` maps each
    firing pair to its detail."""
    known = {(r.condition, r.subject): r for r in s.scalars(select(AlertState).where(AlertState.condition.in_(conditions)))}
    notify: list[Key] = []
    for key, detail in firing.items():
        row = known.get(key)
        if row is None:
            try:
                with s.begin_nested():
                    s.add(AlertState(condition=key[0], subject=key[1][:256], detail=detail[:4000], first_seen=now,
                                     last_sent=now, sent_count=1))
                notify.append(key)
            except IntegrityError:  # another node saw it first and notifies
                pass
            continue
        claimed = s.execute(update(AlertState).where(
            AlertState.id == row.id, AlertState.last_sent < now - resend).values(
            last_sent=now, sent_count=AlertState.sent_count + 1, detail=detail[:4000])
            .execution_options(synchronize_session=False))
        if claimed.rowcount:  # type: ignore[attr-defined]
            notify.append(key)
    resolved = [key for key in known if key not in firing]
    if resolved:
        ids = [known[k].id for k in resolved]
        gone = s.execute(delete(AlertState).where(AlertState.id.in_(ids)).returning(AlertState.condition,
                                                                                    AlertState.subject))
        resolved = [(c, subj) for c, subj in gone]
    return notify, resolved


def unclaim(s: Session, keys: list[Key], *, before: dt.datetime) -> None:
    """The notification of these pairs failed: the next evaluation sends them again."""
    for condition, subject in keys:
        s.execute(update(AlertState).where(AlertState.condition == condition, AlertState.subject == subject)
                  .values(last_sent=before - dt.timedelta(days=3650)).execution_options(synchronize_session=False))


def firing(s: Session) -> list[AlertState]:
    return list(s.scalars(select(AlertState).order_by(AlertState.condition, AlertState.subject)))


__all__ = ["Key", "claim_notifications", "firing", "unclaim"]

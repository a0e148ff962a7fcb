"""The issuing engine on both databases (SQLite and PostgreSQL): ReqIDs in sequence, dispositions,
HRESULTs above 2^31 round-tripping through an INTEGER column, approve/deny only when pending."""

from __future__ import annotations

import pytest

from onlineca import pki
from onlineca.ca import engine as eng
from onlineca.config import CAConfig, Config, TemplateConfig
from onlineca.proto.certsrv import hresults as hr
from onlineca.store import Database


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    eng.init_ca(Config(data_dir=str(d)), d, key_type="ec")
    return d


@pytest.fixture
def engine(ca_dir, db_url):
    config = Config(data_dir=str(ca_dir), ca=CAConfig(templates=[
        TemplateConfig(name="CiscoRA", validity_days=10, extended_key_usage=["client_auth"]),
        TemplateConfig(name="Manual", manager_approval=True), TemplateConfig(name="BobOnly", enroll=["bob"])]))
    db = Database(db_url)
    db.migrate()
    yield eng.CAEngine(config, ca_dir, db)
    db.dispose()


def _csr(cn: str) -> str:
    return pki.csr_pem(pki.build_csr(pki.generate_key("ec", 256), f"CN={cn}")).decode()


def test_issue_pending_deny_and_sequence(engine):
    issued = engine.submit("alice", _csr("one"), "CertificateTemplate:CiscoRA")
    assert issued.disposition == eng.ISSUED and issued.cert_der
    assert pki.key_usage_names(issued.certificate) >= {"digital_signature"}
    assert (issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc).days == 10
    pending = engine.submit("alice", _csr("two"), "CertificateTemplate:Manual")
    denied = engine.submit("alice", _csr("three"), "CertificateTemplate:BobOnly")
    failed = engine.submit("alice", "AAAA", "CertificateTemplate:CiscoRA")
    refused = engine.submit("alice", "!!", "CertificateTemplate:CiscoRA")
    assert [o.req_id for o in (issued, pending, denied, failed)] == list(range(issued.req_id, issued.req_id + 4))
    assert refused.req_id is None and refused.hresult == hr.E_INVALIDARG
    assert (pending.disposition, pending.message) == (eng.PENDING, "Taken Under Submission")
    assert engine.outcome(denied.req_id).hresult == hr.CERTSRV_E_TEMPLATE_DENIED  # > 2^31, stored signed
    assert engine.outcome(failed.req_id).disposition == eng.FAILED
    assert engine.outcome(issued.req_id, "mallory") is None
    approved = engine.approve(pending.req_id, "admin")
    assert approved.disposition == eng.ISSUED and engine.get(pending.req_id).resolved_by == "admin"
    with pytest.raises(eng.CAError, match="not pending"):
        engine.deny(pending.req_id)
    with pytest.raises(eng.CAError, match="no request"):
        engine.approve(10 ** 6)
    serials = {r.serial for r in engine.list(eng.ISSUED)}
    assert len(serials) == 2 and None not in serials


def test_a_ca_without_keys_is_a_clear_error(tmp_path, db_url):
    with pytest.raises(eng.CAError, match="ca init"):
        eng.CAEngine(Config(data_dir=str(tmp_path)), tmp_path, Database(db_url))

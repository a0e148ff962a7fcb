"""Chain building and validation: good paths, and each coded failure an administrator can act on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from onlineca import pki
from onlineca.errors import ChainError, ParseError
from onlineca.infra import files as fs

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def tree():
    """EC root -> issuing -> leaf, and the odd certificates the failure cases need."""
    root_key = pki.generate_key("ec", 256)
    root = pki.build_certificate(subject="CN=Chain Root", public_key=root_key.public_key(), issuer_key=root_key,
                                 is_ca=True, validity_days=3650)
    issuing_key = pki.generate_key("ec", 256)
    issuing = pki.build_certificate(subject="CN=Chain Issuing", public_key=issuing_key.public_key(),
                                    issuer_key=root_key, issuer_cert=root, is_ca=True, validity_days=1825)
    leaf_key = pki.generate_key("ec", 256)
    leaf = pki.build_certificate(subject="CN=leaf", public_key=leaf_key.public_key(), issuer_key=issuing_key,
                                 issuer_cert=issuing, validity_days=30)
    return {"root": root, "root_key": root_key, "issuing": issuing, "issuing_key": issuing_key,
            "leaf": leaf, "leaf_key": leaf_key}


def _failure(leaf, intermediates, anchors, at=None) -> ChainError:
    with pytest.raises(ChainError) as info:
        pki.validate_chain(leaf, intermediates, pki.TrustStore(list(anchors)), at=at)
    assert info.value.hint, "every chain failure tells the administrator what to do"
    return info.value


def test_full_path_to_the_root(tree) -> None:
    path = pki.validate_chain(tree["leaf"], [tree["issuing"]], pki.TrustStore([tree["root"]]))
    assert path == [tree["leaf"], tree["issuing"], tree["root"]]


def test_intermediates_in_any_order_with_extras(tree, lab_pki) -> None:
    path = pki.validate_chain(tree["leaf"], [lab_pki.issuing, tree["root"], tree["issuing"]],
                              pki.TrustStore([lab_pki.root, tree["root"]]))
    assert path == [tree["leaf"], tree["issuing"], tree["root"]]


def test_an_intermediate_in_the_trust_store_is_an_anchor(tree) -> None:
    assert pki.validate_chain(tree["leaf"], [], pki.TrustStore([tree["issuing"]])) == [tree["leaf"], tree["issuing"]]


def test_a_trusted_certificate_validates_alone(tree) -> None:
    assert pki.validate_chain(tree["root"], [], pki.TrustStore([tree["root"]])) == [tree["root"]]


def test_the_rsa_lab_pki(lab_pki) -> None:
    path = pki.validate_chain(lab_pki.server, [lab_pki.issuing], pki.TrustStore([lab_pki.root]))
    assert path[-1] == lab_pki.root


def test_untrusted_issuer(tree) -> None:
    err = _failure(tree["leaf"], [], [tree["root"]])
    assert err.code == "UNTRUSTED_ISSUER"
    assert "/CN=Chain Issuing" in err.message and "/CN=Chain Issuing" in err.hint


def test_chain_to_a_root_that_is_not_trusted(tree, lab_pki) -> None:
    err = _failure(tree["leaf"], [tree["issuing"], tree["root"]], [lab_pki.root])
    assert err.code == "SELF_SIGNED" and "/CN=Chain Root" in err.message
    err = _failure(tree["leaf"], [tree["issuing"]], [lab_pki.root])
    assert err.code == "UNTRUSTED_ISSUER" and "/CN=Chain Root" in err.message


def test_self_signed_leaf(tree) -> None:
    key = pki.generate_key("ec", 256)
    selfsigned = pki.build_certificate(subject="CN=me", public_key=key.public_key(), issuer_key=key)
    err = _failure(selfsigned, [], [tree["root"]])
    assert err.code == "SELF_SIGNED" and "/CN=me" in err.message


def test_not_yet_valid_and_expired(tree) -> None:
    early = tree["leaf"].not_valid_before_utc - dt.timedelta(hours=1)
    err = _failure(tree["leaf"], [tree["issuing"]], [tree["root"]], at=early)
    assert err.code == "NOT_YET_VALID" and "/CN=leaf" in err.message and "NTP" in err.hint
    late = tree["leaf"].not_valid_after_utc + dt.timedelta(seconds=1)
    err = _failure(tree["leaf"], [tree["issuing"]], [tree["root"]], at=late)
    assert err.code == "EXPIRED" and "/CN=leaf" in err.message


def test_a_future_certificate_now(tree) -> None:
    key = pki.generate_key("ec", 256)
    future = pki.build_certificate(subject="CN=future", public_key=key.public_key(), issuer_key=tree["issuing_key"],
                                   issuer_cert=tree["issuing"], not_before=NOW + dt.timedelta(days=1))
    assert _failure(future, [tree["issuing"]], [tree["root"]]).code == "NOT_YET_VALID"


def test_an_expired_intermediate(tree) -> None:
    key = pki.generate_key("ec", 256)
    old_issuing = pki.build_certificate(subject="CN=Old Issuing", public_key=key.public_key(),
                                        issuer_key=tree["root_key"], issuer_cert=tree["root"], is_ca=True,
                                        not_before=NOW - dt.timedelta(days=20), validity_days=10)
    # The same CA (name and key) when it was still valid; build_certificate would otherwise
    # clip the leaf to its issuer's lifetime.
    was_valid = pki.build_certificate(subject="CN=Old Issuing", public_key=key.public_key(),
                                      issuer_key=tree["root_key"], issuer_cert=tree["root"], is_ca=True,
                                      not_before=NOW - dt.timedelta(days=20), validity_days=100)
    leaf_key = pki.generate_key("ec", 256)
    leaf = pki.build_certificate(subject="CN=leaf of old", public_key=leaf_key.public_key(), issuer_key=key,
                                 issuer_cert=was_valid, not_before=NOW - dt.timedelta(days=15), validity_days=30)
    err = _failure(leaf, [old_issuing], [tree["root"]])
    assert err.code == "EXPIRED" and "/CN=Old Issuing" in err.message


def test_an_end_entity_cannot_issue(tree) -> None:
    key = pki.generate_key("ec", 256)
    child = pki.build_certificate(subject="CN=child", public_key=key.public_key(), issuer_key=tree["leaf_key"],
                                  issuer_cert=tree["leaf"])
    err = _failure(child, [tree["leaf"], tree["issuing"]], [tree["root"]])
    assert err.code == "NOT_A_CA" and "/CN=leaf" in err.message
    assert _failure(child, [], [tree["leaf"]]).code == "NOT_A_CA"


def test_an_impostor_intermediate(tree) -> None:
    key = pki.generate_key("ec", 256)
    impostor = pki.build_certificate(subject="CN=Chain Issuing", public_key=key.public_key(),
                                     issuer_key=tree["root_key"], issuer_cert=tree["root"], is_ca=True)
    err = _failure(tree["leaf"], [impostor], [tree["root"]])
    assert err.code == "BAD_SIGNATURE" and "/CN=Chain Issuing" in err.message


def test_an_impostor_anchor(tree) -> None:
    key = pki.generate_key("ec", 256)
    impostor_root = pki.build_certificate(subject="CN=Chain Issuing", public_key=key.public_key(), issuer_key=key,
                                          is_ca=True)
    assert _failure(tree["leaf"], [], [impostor_root]).code == "BAD_SIGNATURE"


def test_order_chain(tree) -> None:
    assert pki.order_chain([tree["root"], tree["leaf"], tree["issuing"]]) == \
        [tree["leaf"], tree["issuing"], tree["root"]]
    assert pki.order_chain([]) == []


def test_trust_store_from_files_and_folders(tree, lab_pki, tmp_path: Path) -> None:
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "root.pem").write_bytes(pki.cert_pem(tree["root"]))
    (folder / "lab.p7b").write_bytes(pki.pkcs7_der([lab_pki.root, lab_pki.issuing]))
    (folder / "notes.txt").write_text("ignored")
    store = fs.load_trust_store(folder, lab_pki.root_pem, "")
    assert len(store) == 3 and tree["root"] in store and lab_pki.issuing in store
    (folder / "broken.pem").write_bytes(b"nothing here")
    with pytest.raises(ParseError):
        fs.load_trust_store(folder)


def test_path_length_constraint(tree) -> None:
    """The lab's issuing CA (pathlen 0) may not have a sub-CA under it."""
    key0 = pki.generate_key("ec", 256)
    strict = pki.build_certificate(subject="CN=Strict Issuing", public_key=key0.public_key(),
                                   issuer_key=tree["root_key"], issuer_cert=tree["root"], is_ca=True, path_length=0)
    key1 = pki.generate_key("ec", 256)
    sub = pki.build_certificate(subject="CN=Sub CA", public_key=key1.public_key(), issuer_key=key0,
                                issuer_cert=strict, is_ca=True)
    leaf_key = pki.generate_key("ec", 256)
    leaf = pki.build_certificate(subject="CN=deep leaf", public_key=leaf_key.public_key(), issuer_key=key1,
                                 issuer_cert=sub)
    err = _failure(leaf, [sub, strict], [tree["root"]])
    assert err.code == "PATH_LENGTH" and "/CN=Strict Issuing" in err.message
    # the same depth under a CA without a constraint is fine
    free = pki.build_certificate(subject="CN=Strict Issuing", public_key=key0.public_key(),
                                 issuer_key=tree["root_key"], issuer_cert=tree["root"], is_ca=True)
    assert len(pki.validate_chain(leaf, [sub, free], pki.TrustStore([tree["root"]]))) == 4


def test_a_ca_without_key_cert_sign_cannot_issue(tree) -> None:
    key = pki.generate_key("ec", 256)
    no_sign = pki.build_certificate(subject="CN=No Sign CA", public_key=key.public_key(), issuer_key=tree["root_key"],
                                    issuer_cert=tree["root"], is_ca=True, key_usage=["digital_signature"])
    leaf_key = pki.generate_key("ec", 256)
    leaf = pki.build_certificate(subject="CN=x", public_key=leaf_key.public_key(), issuer_key=key, issuer_cert=no_sign)
    assert _failure(leaf, [no_sign], [tree["root"]]).code == "NOT_A_CA"


def test_a_missing_trust_file_is_an_os_error(tmp_path: Path) -> None:
    """Callers catch OSError and name their own setting (ra.trust_store...) in the message."""
    with pytest.raises(FileNotFoundError):
        fs.load_trust_store(tmp_path / "absent.pem")

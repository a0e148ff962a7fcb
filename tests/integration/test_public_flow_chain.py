"""The public flow through the whole chain on 127.0.0.1 (``onlineca.lab``: our /certsrv CA, the RA
with its certsrv connector, CAPF), over real TLS: public-flow phones enroll by null string and
auth string with RSA 1024 and 2048 keys (CAPF vouches for each key at the RA as an RA agent, the
CA issues under its CAPFVouchedLSC template); the CA going down is a decline (7) with "CA
Communication Failure"; a CA that insists on a self-signed PKCS#10, as AD CS does, is a decline
with "CA Rejected Connection" and the fix, and the ``capf`` issuer then gets the phone its LSC.

Last, a public-flow client written here from the wire notes alone (raw bytes over ``ssl``, no
``onlineca.proto`` import: the closest we get to a third-party peer) against ``onlineca capf
serve`` in a process of its own; the byte trace it records is in the test's folder."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from onlineca.lab import Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.client import PhoneAuth, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.store import Database, devices as inv

PUBLIC_FLOW = ["AUTH_REQUEST", "KEY_GEN_REQUEST", "STORE_CERT_REQUEST", "END_SESSION"]
NULL = PhoneAuth("null")


class Chain:
    """CA, RA and CAPF of a lab in ``root``, its inventory, and public-flow phones."""

    def __init__(self, root: Path, **ra: Any) -> None:
        self.root = root
        prepare_folder(root)
        config, _mic = make_lab(root)
        self.config = config.model_copy(update={"ra": config.ra.model_copy(update=ra)})
        self.servers = Servers()
        self.db = Database(self.config.database_url)

    async def start(self) -> Chain:
        await start_servers(self.config, self.root, self.servers, default_ports=False)
        return self

    async def close(self) -> None:
        await self.servers.close()
        self.db.dispose()

    def add(self, name: str, **settings: Any) -> None:
        with self.db.session() as s:
            inv.add_device(s, name, actor="test", operation="Install/Upgrade", **settings)

    def device(self, name: str) -> Any:
        with self.db.session() as s:
            return inv.get_device(s, name)

    def status(self, name: str) -> str:
        return inv.CertStatus(self.device(name).status).display  # type: ignore[attr-defined]

    def events(self, name: str) -> list[str]:
        with self.db.session() as s:
            return [f"{e.event} {e.detail}" for e in inv.device_events(s, name, 100)]

    async def public(self, name: str, auth: PhoneAuth = NULL) -> Any:
        capf = self.servers.capf
        assert capf is not None
        target = Target(capf.host, capf.port, phone_ssl_context(self.root / "ca" / "root.pem"))
        phone = Phone(name)
        return phone, await run_session(phone, target, auth, flow="public")


async def test_public_phones_enroll_through_ra_and_ca_and_a_ca_down_is_a_decline(tmp_path: Path) -> None:
    chain = await Chain(tmp_path / "lab").start()
    try:
        cases = [("SEP74A02FC0B001", "By Null String", None, 2048), ("SEP74A02FC0B002", "By Null String", None, 1024),
                 ("SEP74A02FC0B003", "By Authentication String", "40960812", 2048),
                 ("SEP74A02FC0B004", "By Authentication String", "40960812", 1024)]
        for name, mode, secret, bits in cases:
            chain.add(name, auth_mode=mode, auth_string=secret, rsa_key_size=bits)
            phone, result = await chain.public(name, PhoneAuth("string" if secret else "null", secret))
            assert result.outcome == "installed" and result.received == PUBLIC_FLOW, result
            assert phone.lsc.public_key().key_size == bits
            assert "Demo Issuing CA" in phone.lsc.issuer.rfc4514_string()
            eku = phone.lsc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert "1.3.6.1.5.5.7.3.5" in {o.dotted_string for o in eku}  # the template's IPsec end system
            assert chain.status(name) == "Upgrade Success"
        ca_log = (chain.config.log_path / "ca.log").read_text()
        # CAPF's agent certificate comes from the agent template: the CA set its subject (its account).
        assert ca_log.count("vouched for by RA agent /CN=ciscora") == 4 and "(template CAPFVouchedLSC)" in ca_log
        assert "template 'CAPFAgent': issued" in ca_log
        # The CA goes down: the public phone hears 7; the device says why.
        assert chain.servers.ca is not None
        await chain.servers.ca.close()
        chain.add("SEP74A02FC0B005")
        _phone, result = await chain.public("SEP74A02FC0B005")
        assert (result.outcome, result.reason) == ("ended", "OPERATION_REFUSED")
        assert chain.status("SEP74A02FC0B005") == "Upgrade Failed: CA Communication Failure"
        assert chain.device("SEP74A02FC0B005").operation == "OPERATION_UPGRADE"
    finally:
        await chain.close()


async def test_a_ca_that_insists_on_a_self_signed_request_and_the_capf_issuer(tmp_path: Path) -> None:
    """As AD CS does: the RA sends the vouched request under a template without vouched_keys, the
    CA refuses it (NTE_BAD_SIGNATURE, "Error Verifying Request Signature"), the phone hears 7 and the
    device's status and history say what to do; with issuer = capf the same phone gets its LSC."""
    chain = await Chain(tmp_path / "lab", vouched_template="CiscoRA").start()
    try:
        name = "SEP74A02FC0C001"
        chain.add(name)
        _phone, result = await chain.public(name)
        assert (result.outcome, result.reason) == ("ended", "OPERATION_REFUSED")
        assert chain.status(name) == "Upgrade Failed: CA Rejected Connection"
        [status] = [e for e in chain.events(name) if e.startswith("STATUS")]
        assert "insists on a PKCS#10 signed by the phone's own key" in status and "issuer to 'capf'" in status
        assert "Error Verifying Request Signature" in status
        with chain.db.session() as s:
            inv.add_profile(s, "classic", actor="test", issuer="capf")
            inv.set_device(s, name, actor="test", profile="classic")
        phone, result = await chain.public(name)
        assert result.outcome == "installed" and result.received == PUBLIC_FLOW
        capf_ca = x509.load_pem_x509_certificate((tmp_path / "lab" / "capf" / "ca" / "capf-ca.pem").read_bytes())
        assert phone.lsc.issuer == capf_ca.subject
    finally:
        await chain.close()


# --------------------------------------------------------------------------- a third-party peer

def _frame(command: int, sid: bytes, *elements: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack(">BH", tag, len(value)) + value for tag, value in elements)
    return bytes([0x55, command]) + sid + struct.pack(">H", len(body)) + body


class RawPublicClient:
    """A public client from the wire notes: frames by hand, one TLS socket, an 8-second timeout,
    and every frame both ways noted in hex."""

    def __init__(self, host: str, port: int, cafile: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection((host, port), timeout=8)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.sock.settimeout(8)  # a public client's socket timeout
        self.trace: list[str] = []

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("CAPF closed the connection")
            data += chunk
        return data

    def receive(self) -> tuple[int, bytes, list[tuple[int, bytes]], bytes]:
        header = self._read_exactly(8)
        assert header[0] == 0x55
        body = self._read_exactly(struct.unpack(">H", header[6:8])[0])
        self.trace.append(f"CAPF -> phone  {(header + body).hex()}")
        elements, pos = [], 0
        while pos < len(body):
            tag, length = struct.unpack(">BH", body[pos:pos + 3])
            elements.append((tag, body[pos + 3:pos + 3 + length]))
            pos += 3 + length
        return header[1], header[2:6], elements, header + body

    def send(self, data: bytes) -> None:
        self.trace.append(f"phone -> CAPF  {data.hex()}")
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def _session(host: str, port: int, cafile: Path, name: str) -> tuple[list[str], x509.Certificate]:
    client = RawPublicClient(host, port, cafile)
    try:
        command, sid, elements, wire = client.receive()
        assert command == 0x01 and wire == bytes([0x55, 0x01]) + sid + bytes.fromhex("0004" "07000103"), wire.hex()
        client.send(_frame(0x02, sid, (0x07, b"\x02"), (0x0D, name.encode() + b"\x00"), (0x01, b"\x01")))
        command, _sid, elements, wire = client.receive()
        assert command == 0x03 and dict(elements) == {0x0A: b"\x08\x00", 0x11: b"\x00"}, wire.hex()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        client.send(_frame(0x11, sid))  # REQUEST_IN_PROGRESS, once
        client.send(_frame(0x04, sid, (0x09, spki)))
        command, _sid, elements, wire = client.receive()  # the very next frame: the certificate
        assert command == 0x09 and [tag for tag, _ in elements] == [0x03, 0x04], wire.hex()
        assert elements[0][1] == b"\x01"
        nested = elements[1][1]
        assert nested[0] == 0x01 and struct.unpack(">H", nested[1:3])[0] == len(nested) - 3 and nested[3:5] == b"\x00\x01"
        cert = x509.load_der_x509_certificate(nested[5:])
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        client.send(_frame(0x0A, sid, (0x01, b"\x01")))
        command, _sid, elements, wire = client.receive()
        assert wire == bytes([0x55, 0x0F]) + sid + bytes.fromhex("0004" "01000101"), wire.hex()
        return client.trace, cert
    finally:
        client.close()


async def test_a_raw_public_client_against_capf_serve_in_its_own_process(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "lab")
    await chain.start()
    proc: asyncio.subprocess.Process | None = None
    try:
        assert chain.servers.capf is not None and chain.servers.ra is not None
        await chain.servers.capf.close()  # it enrolled CAPF's certificate; the process serves it
        cfg = chain.config.capf
        env = {**os.environ, "ONLINECA_DATABASE_URL": chain.config.database_url,
               "ONLINECA_CAPF_RA_URL": chain.servers.ra.url, "ONLINECA_CAPF_RA_USER": cfg.ra_user,
               "ONLINECA_CAPF_RA_PASSWORD": cfg.ra_password.get_secret_value(),
               "ONLINECA_CAPF_RA_TRUST_STORE": cfg.ra_trust_store}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "onlineca", "--data-dir", str(chain.root), "--log-dir", str(chain.root / "logs"),
            "capf", "serve", "--port", "0", "--no-scheduler", env=env, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("CAPF serving "), line + (await proc.stderr.read()).decode()[-2000:]
        host, _, port = line.split()[2].rpartition(":")
        name = "SEP74A02FC0D001"
        chain.add(name)
        trace, cert = await asyncio.to_thread(_session, host, int(port), chain.root / "ca" / "root.pem", name)
        (tmp_path / "public_flow_trace.txt").write_text("\n".join(trace) + "\n")
        assert len(trace) == 8 and cert.subject.rfc4514_string() == f"CN={name}"
        assert chain.status(name) == "Upgrade Success" and chain.device(name).client_flow == "public"
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        await chain.close()


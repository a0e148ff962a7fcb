"""A throw-away MIT Kerberos realm on 127.0.0.1 for the Negotiate tests: a KDC the tests start
(Debian's krb5-kdc and krb5-admin-server), a user principal and the keytab of the CA's HTTP
service principal, all in a temp folder, with KRB5_CONFIG, KRB5CCNAME and KRB5_KTNAME pointing
there.  Outside CI the tests skip when the KDC programs are absent; under CI they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REALM = "ONLINECA.TEST"
USER, USER_PASSWORD = "alice", "alice-Kerb3ros"
SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


@dataclass
class KDC:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def keytab(self) -> Path:
        return self.dir / "http.keytab"

    def kinit(self, principal: str = USER, password: str = USER_PASSWORD) -> None:
        """A ticket in $KRB5CCNAME (what a service account logged in with kinit has)."""
        subprocess.run([_tool("kinit") or "kinit", principal], input=password.encode(), env=self.env,
                       check=True, capture_output=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kdc(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tools = {name: _tool(name) for name in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")}
    missing = [name for name, path in tools.items() if path is None]
    try:
        import gssapi  # noqa: F401
        import krb5  # noqa: F401
    except ImportError as exc:
        missing.append(f"python {exc.name}")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Kerberos test tools missing under CI: {', '.join(missing)} (.ci/run installs them)")
        pytest.skip(f"no MIT Kerberos here ({', '.join(missing)}): apt-get install krb5-kdc krb5-admin-server "
                    "krb5-user libkrb5-dev, pip install 'pyspnego[kerberos]'")
    d = tmp_path_factory.mktemp("krb5")
    port = _free_port()
    (d / "krb5.conf").write_text(f"""[libdefaults]
 default_realm = {REALM}
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
[realms]
 {REALM} = {{
  kdc = 127.0.0.1:{port}
 }}
[domain_realm]
 localhost = {REALM}
""")
    (d / "kdc.conf").write_text(f"""[kdcdefaults]
 kdc_ports = {port}
 kdc_tcp_ports = {port}
[realms]
 {REALM} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
 }}
[logging]
 kdc = FILE:{d}/kdc.log
""")
    (d / "kadm5.acl").write_text("")
    env = dict(os.environ, KRB5_CONFIG=str(d / "krb5.conf"), KRB5_KDC_PROFILE=str(d / "kdc.conf"),
               KRB5CCNAME=f"FILE:{d / 'ccache'}", KRB5_KTNAME=f"FILE:{d / 'http.keytab'}")

    def run(*args: str) -> None:
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=60)

    run(str(tools["kdb5_util"]), "create", "-s", "-r", REALM, "-P", "master-Passw0rd")
    run(str(tools["kadmin.local"]), "-q", f"addprinc -pw {USER_PASSWORD} {USER}")
    run(str(tools["kadmin.local"]), "-q", "addprinc -randkey HTTP/localhost")
    run(str(tools["kadmin.local"]), "-q", f"ktadd -k {d / 'http.keytab'} HTTP/localhost")
    proc = subprocess.Popen([str(tools["krb5kdc"]), "-n"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:  # readiness: the KDC accepts TCP connections
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test KDC did not start: {(d / 'kdc.log').read_text()[-2000:]}") from None
            time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5_KTNAME")}
    os.environ.update({k: env[k] for k in saved})  # GSSAPI in this process reads them
    try:
        yield KDC(d, port, proc, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(10)

"""A throw-away certificate authority and server certificates, for development and tests.

``python -m scripts.dev_tls DIR HOST [HOST ...]`` writes ``DIR/ca.pem`` (trust it with
``TLS_CA_FILE``), ``DIR/server.pem`` and ``DIR/server-key.pem`` (a certificate for every
HOST, DNS names or IP addresses). Files for the same hosts that stay valid for another 30
days are kept, so the compose service ``certs`` runs it at every start. Not for production:
there the certificates come from your own CA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def new_ca(common_name: str = "ams development CA", days: int = 365) -> Authority:
    """A self-signed CA that may sign server certificates (and nothing below them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def issue(ca: Authority, hosts: list[str], days: int = 365) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a server known as every name in ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        _builder(hosts[0], ca.cert.subject, key, days)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


RENEW_BEFORE = dt.timedelta(days=30)


def write(directory: Path, hosts: list[str]) -> bool:
    """``ca.pem``, ``server.pem`` and ``server-key.pem`` in ``directory``, made anew unless
    present, for the same ``hosts`` and valid for another :data:`RENEW_BEFORE`. True: made."""
    directory.mkdir(parents=True, exist_ok=True)
    if _current(directory, hosts):
        return False
    ca = new_ca()
    cert, key = issue(ca, hosts)
    (directory / "server-key.pem").write_bytes(key)
    (directory / "server-key.pem").chmod(0o600)
    (directory / "server.pem").write_bytes(cert)
    (directory / "ca.pem").write_bytes(ca.pem)
    return True


def _current(directory: Path, hosts: list[str]) -> bool:
    files = [directory / n for n in ("ca.pem", "server.pem", "server-key.pem")]
    if not all(f.exists() for f in files):
        return False
    cert = x509.load_pem_x509_certificate(files[1].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    named = {str(n.value) for n in names}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
    return fresh and named == set(hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args()
    write(args.directory, args.hosts)


if __name__ == "__main__":
    main()

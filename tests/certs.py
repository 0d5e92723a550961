"""Test certificates made on the fly with ``cryptography``: a CA, a server certificate for
localhost and an IP address (127.0.0.1 unless told) and a client certificate, all signed by the CA (plus a second,
unrelated CA for "untrusted" cases). Written to a temporary directory; never committed.
"""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _write_cert(cert, path):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _certificate(subject, key, issuer, issuer_key, *, ca=False, usage=None, sans=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(_name(issuer))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Certs:
    """Paths (str) of the generated PEM files."""

    def __init__(self, directory, server_ip="127.0.0.1"):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("greensq test CA", ca_key, "greensq test CA", ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate(
            server_ip, server_key, "greensq test CA", ca_key,
            usage=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(server_ip))])
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate("greensq-test-client", client_key, "greensq test CA", ca_key,
                              usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_ca = _certificate("unrelated CA", other_key, "unrelated CA", other_key, ca=True)
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue = _certificate("rogue-client", rogue_key, "unrelated CA", other_key,
                             usage=[ExtendedKeyUsageOID.CLIENT_AUTH])

        self.ca = str(directory / "ca.pem")
        self.server_cert = str(directory / "server.pem")
        self.server_key = str(directory / "server.key")
        self.client_cert = str(directory / "client.pem")
        self.client_key = str(directory / "client.key")
        self.other_ca = str(directory / "other-ca.pem")
        self.rogue_cert = str(directory / "rogue.pem")
        self.rogue_key = str(directory / "rogue.key")
        _write_cert(ca, Path(self.ca))
        _write_cert(server, Path(self.server_cert))
        _write_key(server_key, Path(self.server_key))
        _write_cert(client, Path(self.client_cert))
        _write_key(client_key, Path(self.client_key))
        _write_cert(other_ca, Path(self.other_ca))
        _write_cert(rogue, Path(self.rogue_cert))
        _write_key(rogue_key, Path(self.rogue_key))

    def server_flags(self, *extra):
        return (f"--tls-cert={self.server_cert}", f"--tls-key={self.server_key}",
                "--https-address=127.0.0.1:0", *extra)


def make_certs(directory):
    return Certs(directory)

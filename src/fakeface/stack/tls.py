"""SeaweedFS' mutual TLS: a private CA, one key pair for its servers and clients, security.toml.

``weed mini`` runs a master, a volume server, a filer, an S3 gateway and an admin server, each on
an HTTP port and a gRPC port. Only the S3 port checks who is asking (AWS signatures); the others
answer anyone who can connect, and on a shared machine anyone can connect to 127.0.0.1. So every
port but S3 is put behind mutual TLS: a client must present a certificate signed by the stack's
own CA. That CA signs exactly one certificate, the one the servers present and use among
themselves, and its key is thrown away right after: nobody, this package included, can sign
another. Certificate and key live in ``<root>/seaweedfs/tls`` (the key mode 0600, in a 0700
tree); ``security.toml`` tells weed to use them for every gRPC server and client and for the
master's, volume server's, filer's and admin server's HTTP.

``cryptography`` (an MLflow dependency) is imported inside the functions.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from fakeface.stack.config import HOST, StackConfig
from fakeface.stack.credentials import write_private

log = logging.getLogger("fakeface.stack")

CA_CERT, CERT, KEY = "ca.crt", "node.crt", "node.key"
#: A new pair when the certificate has less than this left (it is made valid for ten years).
RENEW_BEFORE = datetime.timedelta(days=30)
#: weed's components, each a gRPC server (and client) with its own section in security.toml.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker")
#: Components whose HTTP port is served over TLS, client certificate required.
HTTPS_COMPONENTS = ("master", "volume", "filer", "admin")


def tls_files(cfg: StackConfig) -> dict[str, Path]:
    return {"ca": cfg.tls_dir / CA_CERT, "cert": cfg.tls_dir / CERT, "key": cfg.tls_dir / KEY}


def ensure_certificates(cfg: StackConfig) -> dict[str, Path]:
    """The CA certificate and the node's certificate and key: made once, renewed near expiry."""
    files = tls_files(cfg)
    if all(p.is_file() for p in files.values()) and not _expiring(files["cert"]):
        return files
    ca_pem, cert_pem, key_pem = _issue()
    cfg.tls_dir.mkdir(parents=True, exist_ok=True)
    write_private(files["key"], key_pem)
    write_private(files["cert"], cert_pem)
    write_private(files["ca"], ca_pem)
    log.info("made SeaweedFS' TLS certificates in %s (the CA's key is not kept)", cfg.tls_dir)
    return files


def _expiring(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return True
    now = datetime.datetime.now(datetime.timezone.utc)
    return cert.not_valid_after_utc - now < RENEW_BEFORE


def _issue() -> tuple[str, str, str]:
    """PEM texts: a fresh CA certificate, and a certificate + key it signed (then forgotten)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakeface stack CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakeface-seaweedfs")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), key_pem.decode()


def security_toml(files: dict[str, Path]) -> str:
    """weed's security.toml: mutual TLS on every gRPC port and on the internal HTTP ports."""
    ca, cert, key = (f'"{files[k]}"' for k in ("ca", "cert", "key"))
    lines = ["# Written by `fakeface stack up` at each start (see fakeface.stack.tls).", "",
             "[grpc]", f"ca = {ca}", ""]
    for component in (*GRPC_COMPONENTS, "client"):
        lines += [f"[grpc.{component}]", f"cert = {cert}", f"key = {key}", ""]
    lines += ["[https.client]", "enabled = true", f"cert = {cert}", f"key = {key}", f"ca = {ca}", ""]
    for component in HTTPS_COMPONENTS:
        lines += [f"[https.{component}]", f"cert = {cert}", f"key = {key}", f"ca = {ca}", ""]
    # No UI of the volume server nor directory listings of the filer even to a client with the
    # certificate: nothing of ours browses them.
    lines += ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
    return "\n".join(lines)


def client_context(cfg: StackConfig):
    """An ``ssl.SSLContext`` that presents the stack's certificate (for checks and tests)."""
    import ssl

    files = tls_files(cfg)
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.check_hostname = False  # weed's servers present the one certificate on every port
    context.load_cert_chain(str(files["cert"]), str(files["key"]))
    return context

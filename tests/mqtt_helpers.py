"""A real MQTT broker for the tests: Debian's mosquitto on a loopback port of its own,
with a password file or TLS (a test CA made with cryptography) when asked."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import needed


class Broker:
    """mosquitto on a loopback port of its own, (re)startable on the same port."""

    def __init__(self, folder: Path, *, password: str | None = None, tls: bool = False) -> None:
        self.binary = needed(
            "mosquitto",
            "BRIDGE_REQUIRE_MOSQUITTO",
            "Debian: apt-get install mosquitto",
            path="/usr/sbin/mosquitto",
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # run as whoever runs the tests (started as root it would become "mosquitto",
        # which may not read the test's folder)
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {user}"]
        if password is None:
            lines.append("allow_anonymous true")
        else:
            passwd = folder / "passwd"
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            subprocess.run([tool, "-b", "-c", str(passwd), "car", password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        if tls:  # a test CA and a server certificate for 127.0.0.1 signed by it
            self.ca = folder / "ca.pem"
            cert, key = folder / "server.pem", folder / "server.key"
            make_certificates(self.ca, cert, key)
            lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def make_certificates(ca_path: Path, cert_path: Path, key_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    key_path.chmod(0o600)

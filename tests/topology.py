"""Real Redis topologies on loopback for the scale-out tests: TLS with a throwaway CA, and a
master, a replica and three Sentinels. Each process is started and stopped by its fixture."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reseller_webhooks.worker.devserver.redis_server import find_redis_server, free_port
from tests.helpers import IN_CI

MASTER = "webhooks"


def missing(what: str) -> None:
    """A capability the machine lacks: skipped locally, a failure under CI=true."""
    if IN_CI:
        pytest.fail(f"CI=true and {what}")
    pytest.skip(what)


def redis_binary() -> str:
    try:
        return find_redis_server()
    except Exception as exc:
        missing(f"no redis-server: {exc}")
        raise


def supports_tls(binary: str) -> bool:
    """A build without TLS refuses the ``tls-port`` directive."""
    out = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0", "--save", ""],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return "Bad directive" not in out.stdout + out.stderr


def wait_ping(client: redis.Redis, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-800:] if log.exists() else ""
                raise RuntimeError(f"redis process did not answer: {tail}") from None
            time.sleep(0.05)


# --- TLS ----------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: the wrong-CA case


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("reseller-webhooks test CA", ca_key, None, ca=True)
    server_key, client_key = _key(), _key()
    other_key = _key()
    return Certificates(
        ca=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(
            _cert("localhost", server_key, (ca, ca_key), server=True), directory / "server.pem"
        ),
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=_write_cert(
            _cert("webhooks-worker", client_key, (ca, ca_key)), directory / "client.pem"
        ),
        client_key=_write_key(client_key, directory / "client.key"),
        other_ca=_write_cert(
            _cert("some other CA", other_key, None, ca=True), directory / "other-ca.pem"
        ),
    )


class TLSRedis:
    """``redis-server`` speaking only TLS (``--port 0``), asking clients for a certificate."""

    def __init__(self, directory: Path, certs: Certificates) -> None:
        self.binary = redis_binary()
        if not supports_tls(self.binary):
            missing(f"{self.binary} was built without TLS")
        self.directory = directory
        self.certs = certs
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def client_env(self) -> dict[str, str]:
        return {
            "WEBHOOKS_REDIS_CA_FILE": str(self.certs.ca),
            "WEBHOOKS_REDIS_CERT_FILE": str(self.certs.client_cert),
            "WEBHOOKS_REDIS_KEY_FILE": str(self.certs.client_key),
        }

    def start(self) -> TLSRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        c = self.certs
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", "0",
                "--bind", "127.0.0.1",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(c.server_cert),
                "--tls-key-file", str(c.server_key),
                "--tls-ca-cert-file", str(c.ca),
                "--tls-auth-clients", "yes",
                "--dir", str(self.directory),
                "--save", "",
                "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(c.ca),
            ssl_certfile=str(c.client_cert),
            ssl_keyfile=str(c.client_key),
        )
        try:
            wait_ping(client, self.process, log)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


# --- Sentinel -----------------------------------------------------------------------------


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        if self.alive():
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=10)


class SentinelGroup:
    """A master, a replica and three Sentinels (quorum 2) watching them, on loopback."""

    def __init__(self, directory: Path, *, down_after_ms: int = 1000, password: str = "") -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.password = password
        self.nodes: dict[str, Node] = {}
        self.sentinel_ports: list[int] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}/0" for p in self.sentinel_ports)

    def client_env(self) -> dict[str, str]:
        env = {"REDIS_URL": self.url, "WEBHOOKS_SENTINEL_MASTER": MASTER}
        if self.password:
            env["WEBHOOKS_SENTINEL_PASSWORD"] = self.password
        return env

    def _spawn(self, name: str, args: list[str], port: int) -> Node:
        workdir = self.directory / name
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / "redis.log"
        process = subprocess.Popen(
            [*args, "--dir", str(workdir), "--logfile", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = Node(port, process, log)
        self.nodes[name] = node
        client = redis.Redis(port=port, password=self.password or None)
        try:
            wait_ping(client, process, log)
        finally:
            client.close()
        return node

    def _server(self, name: str, *extra: str) -> Node:
        port = free_port()
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", *extra]
        # A replica's first sync starts at once rather than after the default 5 s a master
        # waits for more replicas to share a diskless transfer.
        args += ["--repl-diskless-sync-delay", "0"]
        return self._spawn(name, args, port)

    def start(self) -> SentinelGroup:
        master = self._server("master")
        self._server("replica", "--replicaof", "127.0.0.1", str(master.port))
        self.wait(lambda: self.role("replica")[3] == b"connected", "replica in sync")
        for i in range(3):
            port = free_port()
            conf = self.directory / f"sentinel-{i}" / "sentinel.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 2",
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} 5000",
                f"sentinel parallel-syncs {MASTER} 1",
            ]
            if self.password:
                lines.append(f"requirepass {self.password}")
            conf.write_text("\n".join(lines) + "\n")
            self._spawn(f"sentinel-{i}", [self.binary, str(conf), "--sentinel"], port)
            self.sentinel_ports.append(port)
        self.wait(lambda: self.sentinels_agree(master.port), "Sentinels see the master")
        return self

    def role(self, name: str) -> Any:
        client = redis.Redis(port=self.nodes[name].port)
        try:
            return client.execute_command("ROLE")
        finally:
            client.close()

    def master_port(self, sentinel: int = 0) -> int | None:
        client = redis.Redis(port=self.sentinel_ports[sentinel], password=self.password or None)
        try:
            addr = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            return int(addr[1]) if addr else None
        except redis.RedisError:
            return None
        finally:
            client.close()

    def sentinels_agree(self, port: int) -> bool:
        if not all(self.master_port(i) == port for i in range(len(self.sentinel_ports))):
            return False
        client = redis.Redis(port=self.sentinel_ports[0], password=self.password or None)
        try:
            info = client.sentinel_master(MASTER)
            return int(info["num-other-sentinels"]) == 2 and int(info["num-slaves"]) == 1
        finally:
            client.close()

    @staticmethod
    def wait(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if predicate():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out: {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(kill=True)

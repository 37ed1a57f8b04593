"""``signing: ed25519``: Standard Webhooks ``v1a`` signatures, verified here by code written from
the spec alone (``cryptography``'s Ed25519 public key, and Node's ``crypto.verify`` when node is
installed), never by the code that signs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.cli.commands import main
from reseller_webhooks.worker.config.subscribers import parse_config
from reseller_webhooks.worker.devserver.receiver import Received, Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.http.signing import Signer
from tests.helpers import IN_CI, Deployment, new_secret

# What a receiver holds: the whpk_ public key. Everything below this line up to the tests is
# the receiver's side, from the spec: base64 after the prefix, v1a,<base64 signature> entries
# in a space-separated header, over "{webhook-id}.{webhook-timestamp}.{body}".


def verify_v1a(public: str, body: bytes, headers: dict[str, str]) -> int:
    """How many ``v1a`` signatures in ``headers`` verify with ``public``; raises when none."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    good = 0
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        assert version == "v1a"
        try:
            key.verify(base64.b64decode(signature), signed)
            good += 1
        except InvalidSignature:
            pass
    if not good:
        raise InvalidSignature("no v1a signature verifies")
    return good


def pair() -> tuple[str, str]:
    """A key pair made here (not by the code under test): whsk_ of the 64-byte secret key."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return (
        "whsk_" + base64.b64encode(seed + public).decode(),
        "whpk_" + base64.b64encode(public).decode(),
    )


def seed_of(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsk_"))[:32]


def sub(**extra: Any) -> dict[str, Any]:
    return {
        "id": "ed",
        "url": "https://hooks.acme.example/r",
        "events": ["reseller.user.*"],
        **extra,
    }


def test_signatures_verify_with_the_public_key_and_fail_on_any_change() -> None:
    secret, public = pair()
    body = '{"event":"reseller.user.updated","data":{"name":"Zoë"}}'.encode()
    headers = Signer([seed_of(secret)], "ed25519").headers("msg_abc", 1795348522, body)
    assert headers["webhook-signature"].startswith("v1a,")
    assert verify_v1a(public, body, headers) == 1
    for changed in (
        (body + b" ", headers),
        (body, {**headers, "webhook-timestamp": "1795348523"}),
        (body, {**headers, "webhook-id": "msg_abd"}),
    ):
        with pytest.raises(InvalidSignature):
            verify_v1a(public, *changed)
    with pytest.raises(InvalidSignature):
        verify_v1a(pair()[1], body, headers)  # another key


def test_rotation_sends_two_signatures_each_verifying_with_its_own_key() -> None:
    (new, new_public), (old, old_public) = pair(), pair()
    body = b'{"event":"reseller.user.created"}'
    headers = Signer([seed_of(new), seed_of(old)], "ed25519").headers("msg_r", 1795348522, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify_v1a(new_public, body, headers) == 1
    assert verify_v1a(old_public, body, headers) == 1


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_" + "A" * 32, "must start with 'whsk_'"),
        ("whsk_not*base64", "the part after 'whsk_' must be valid base64"),
        ("whsk_" + base64.b64encode(b"k" * 48).decode(), "got 48"),
        (
            "whsk_" + base64.b64encode(b"k" * 32 + b"p" * 32).decode(),
            "its second half is not its public key",
        ),
    ],
)
def test_bad_secret_keys_are_refused_naming_the_field_never_the_value(
    secret: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"subscribers": [sub(signing="ed25519", secret=secret)]})
    text = str(err.value)
    assert "subscriber 'ed': secret: " in text
    assert message in text
    assert secret.partition("_")[2] not in text


def test_a_whsk_secret_needs_signing_ed25519_and_a_32_byte_seed_is_accepted() -> None:
    secret, _ = pair()
    with pytest.raises(ConfigError, match="must start with 'whsec_'"):
        parse_config({"subscribers": [sub(secret=secret)]})
    seed_only = "whsk_" + base64.b64encode(seed_of(secret)).decode()
    for given in (secret, seed_only):
        config = parse_config({"subscribers": [sub(signing="ed25519", secret=given)]})
        assert config.subscribers[0].signing_keys == (seed_of(secret),)
        assert secret.removeprefix("whsk_") not in repr(config)
    with pytest.raises(ConfigError, match="not the secret itself"):
        parse_config({"subscribers": [sub(signing="ed25519", secret_env=secret)]})


def test_keys_new_prints_a_pair_that_signs_and_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    out = CliRunner().invoke(main, ["keys", "new"])
    assert out.exit_code == 0, out.output
    words = out.output.split()
    secret = next(w for w in words if w.startswith("whsk_"))
    public = next(w for w in words if w.startswith("whpk_"))
    assert len(base64.b64decode(secret.removeprefix("whsk_"))) == 64
    body = b"{}"
    headers = Signer([seed_of(secret)], "ed25519").headers("msg_k", 1795348522, body)
    assert verify_v1a(public, body, headers) == 1
    monkeypatch.setenv("ED_KEY", secret)
    derived = CliRunner().invoke(main, ["keys", "public", "--env", "ED_KEY"])
    assert derived.output.strip() == public
    monkeypatch.setenv("ED_KEY", new_secret())
    refused = CliRunner().invoke(main, ["keys", "public", "--env", "ED_KEY"])
    assert refused.exit_code == 2
    assert "must start with 'whsk_'" in refused.output


NODE_VERIFY = """
const crypto = require('crypto');
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const results = items.map(({pub, id, ts, body, sigs}) => {
  const key = crypto.createPublicKey({key: {kty: 'OKP', crv: 'Ed25519',
    x: Buffer.from(pub, 'base64').toString('base64url')}, format: 'jwk'});
  const data = Buffer.concat([Buffer.from(id + '.' + ts + '.'), Buffer.from(body, 'base64')]);
  return sigs.split(' ').filter((s) => s.startsWith('v1a,')).map(
    (s) => crypto.verify(null, data, key, Buffer.from(s.slice(4), 'base64')));
});
process.stdout.write(JSON.stringify(results));
"""


def node_verify(public: str, received: list[Received]) -> list[list[bool]]:
    """Node's own ed25519 (``crypto.verify``) over each request as it arrived."""
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("CI=true and node is not installed")
        pytest.skip("node is not installed")
    items = [
        {
            "pub": public.removeprefix("whpk_"),
            "id": r.headers["webhook-id"],
            "ts": r.headers["webhook-timestamp"],
            "body": base64.b64encode(r.body).decode(),
            "sigs": r.headers["webhook-signature"],
        }
        for r in received
    ]
    done = subprocess.run(
        [node, "-e", NODE_VERIFY], input=json.dumps(items), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.slow
def test_a_worker_signs_v1a_with_both_keys_during_a_rotation(
    deployment: Deployment, receiver: Receiver, publisher: Publisher
) -> None:
    """A real worker, a subscriber with ``signing: ed25519`` whose key is being rotated: every
    request carries two ``v1a`` signatures, one per key, verified by Python and Node from the
    public keys alone; the worker's log holds neither secret key."""
    (new, new_public), (old, old_public) = pair(), pair()
    deployment.subscriber(
        "ed", f"{receiver.url}/ed", signing="ed25519", previous_secret_env="ED_OLD"
    )
    deployment.secrets.update({"SECRET_ED": new, "ED_OLD": old})
    worker = deployment.start_worker()
    ids = [publisher.user_created({**sample_user(), "id": f"usr_{n}"}) for n in range(3)]
    received = receiver.wait_for(3, timeout_s=30)
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(ids)
    for item in received:
        assert abs(int(item.headers["webhook-timestamp"]) - time.time()) < 300
        assert verify_v1a(new_public, item.body, item.headers) == 1
        assert verify_v1a(old_public, item.body, item.headers) == 1
    assert node_verify(new_public, received) == [[True, False]] * 3
    assert node_verify(old_public, received) == [[False, True]] * 3
    log = worker.log()
    for secret in (new, old):
        assert secret.removeprefix("whsk_")[:16] not in log

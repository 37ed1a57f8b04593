"""Standard Webhooks signing: the spec's test vector, verification by both reference libraries."""

from __future__ import annotations

import base64

from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

from reseller_webhooks.worker.http.signing import Signer
from tests.helpers import new_secret

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def test_spec_test_vector() -> None:
    headers = Signer([key(VECTOR_SECRET)]).headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    import time

    new, old = new_secret(), new_secret()
    body = '{"event":"reseller.user.updated","data":{"name":"Zoë"}}'.encode()
    headers = Signer([key(new), key(old)]).headers("msg_abc", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(body, headers)
        SvixWebhook(secret).verify(body, headers)


def test_signer_repr_hides_keys() -> None:
    secret = new_secret()
    assert secret.removeprefix("whsec_") not in repr(Signer([key(secret)]))

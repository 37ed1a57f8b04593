"""``reseller-webhooks keys``: ed25519 key pairs for subscribers with ``signing: ed25519``."""

from __future__ import annotations

import os

import click


@click.group()
def keys() -> None:
    """ed25519 signing keys (Standard Webhooks whsk_ / whpk_)."""


@keys.command("new")
def keys_new() -> None:
    """Print a fresh key pair: the secret key for the subscriber's secret_env variable, and the
    public key its receiver verifies v1a signatures with."""
    from reseller_webhooks.worker.config.signing_secrets import new_key_pair

    secret, public = new_key_pair()
    click.echo(f"secret key (set it in the variable secret_env names; never share it): {secret}")
    click.echo(f"public key (give it to the receiver): {public}")


@keys.command("public")
@click.option("--env", "env", required=True, help="The variable holding a whsk_ secret key.")
def keys_public(env: str) -> None:
    """Print the whpk_ public key of the whsk_ secret key in variable ENV."""
    import base64

    from reseller_webhooks.worker.config.signing_secrets import decode_secret_key, public_key

    raw = os.environ.get(env)
    if not raw:
        raise click.UsageError(f"environment variable {env} is not set")
    try:
        seed = decode_secret_key(raw)
    except ValueError as exc:
        raise click.UsageError(f"the value of {env} {exc}") from None
    click.echo("whpk_" + base64.b64encode(public_key(seed)).decode())

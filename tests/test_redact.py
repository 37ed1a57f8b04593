"""Subscriber URLs as shown in logs, records, pages and the command line: scheme, host, port and
path, never credentials, a query string or a fragment."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from reseller_webhooks.worker.cli.commands import main
from reseller_webhooks.worker.config.subscribers import parse_config
from reseller_webhooks.worker.config.urls import UNREADABLE_URL, redact_url
from tests.helpers import new_secret


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # no path: "/" is what is requested
        ("https://hooks.example", "https://hooks.example/"),
        ("https://u:p@hooks.example?token=abc", "https://hooks.example/"),
        ("https://hooks.example/", "https://hooks.example/"),
        # a port is kept, a default one is not
        ("https://hooks.example:8443/in", "https://hooks.example:8443/in"),
        ("https://hooks.example:443/in", "https://hooks.example/in"),
        ("http://hooks.example:443/in", "http://hooks.example:443/in"),
        # IPv6 hosts keep their brackets (and zone id)
        ("http://[::1]:8080/x?y=1", "http://[::1]:8080/x"),
        ("http://u:p@[2001:db8::7]/hook#f", "http://[2001:db8::7]/hook"),
        ("http://[fe80::1%25eth0]:9000/", "http://[fe80::1%25eth0]:9000/"),
        # userinfo only
        ("https://user@hooks.example/r", "https://hooks.example/r"),
        ("https://user:pa%40ss@hooks.example/r", "https://hooks.example/r"),
        ("https://:only-password@hooks.example/r", "https://hooks.example/r"),
        # query only, fragment only, both
        ("https://hooks.example/r?token=abc&x=1", "https://hooks.example/r"),
        ("https://hooks.example/r#token=abc", "https://hooks.example/r"),
        ("https://hooks.example/r?token=abc#frag", "https://hooks.example/r"),
        ("https://hooks.example#frag?token=abc", "https://hooks.example/"),
        ("https://hooks.example/r?next=/a/b", "https://hooks.example/r"),
        # percent-encoding is kept as it is; what needs it gets it
        ("https://hooks.example/a%20b/%2F/%3F?x=%41", "https://hooks.example/a%20b/%2F/%3F"),
        ("https://hooks.example/über uns", "https://hooks.example/%C3%BCber%20uns"),
        ("https://Hooks.EXAMPLE/Path", "https://hooks.example/Path"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://hooks.example/p;v=1?q", "https://hooks.example/p;v=1"),
        # not an absolute http(s) URL: nothing of it is shown
        ("ftp://u:p@files.example/x", UNREADABLE_URL),
        ("/relative?token=abc", UNREADABLE_URL),
        ("token-abc", UNREADABLE_URL),
        ("https://hooks.example/a\nb?token=abc", UNREADABLE_URL),
        ("", UNREADABLE_URL),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # What the callers pass: the subscriber's URL as the subscribers file normalises it.
        ("https://hooks.example", "https://hooks.example/"),
        ("https://u:p@hooks.example?token=abc", "https://hooks.example/"),
        ("HTTPS://Hooks.Example:443/r?token=abc#f", "https://hooks.example/r"),
        ("http://u:p@[2001:DB8::7]:8080/hook?k=v", "http://[2001:db8::7]:8080/hook"),
        ("https://hooks.example/a b?token=x y", "https://hooks.example/a%20b"),
        ("http://127.0.0.1:8090/webhooks", "http://127.0.0.1:8090/webhooks"),
    ],
)
def test_a_normalised_subscriber_url(url: str, shown: str) -> None:
    config = parse_config(
        {"subscribers": [{"id": "s", "url": url, "events": ["*"], "secret": new_secret()}]}
    )
    assert redact_url(str(config.subscribers[0].url)) == shown


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=8, max_size=20)


@given(
    user=token,
    password=token,
    query=token,
    fragment=token,
    host=st.sampled_from(["hooks.example", "127.0.0.1", "[::1]", "[2001:db8::1]"]),
    port=st.sampled_from(["", ":8443"]),
    path=st.sampled_from(["", "/", "/in", "/a/b;c"]),
)
def test_no_credential_query_or_fragment_is_ever_shown(
    user: str, password: str, query: str, fragment: str, host: str, port: str, path: str
) -> None:
    # "x" on each side keeps a token from matching a host or path by chance.
    secrets = [f"x{t}x" for t in (user, password, query, fragment)]
    url = f"https://{secrets[0]}:{secrets[1]}@{host}{port}{path}?t={secrets[2]}#{secrets[3]}"
    shown = redact_url(url)
    assert shown == f"https://{host}{port}{path or '/'}"
    for secret in secrets:
        assert secret not in shown


def test_subscribers_check_shows_no_token(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "subscribers:\n"
        "  - id: acme\n"
        "    url: https://hook-user:pw-41c9@hooks.acme.example?token=q-5e8a#f-77d2\n"
        "    events: ['reseller.user.*']\n"
        "    secret_env: ACME_SECRET\n"
    )
    run = CliRunner().invoke(
        main, ["subscribers", "check", "--file", str(path), "--without-secrets", "--offline"]
    )
    assert run.exit_code == 0, run.output
    assert "acme  https://hooks.acme.example/  " in run.output
    for hidden in ("hook-user", "pw-41c9", "q-5e8a", "f-77d2"):
        assert hidden not in run.output

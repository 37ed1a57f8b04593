"""Hypothesis strategies for the seeds' constraints: valid values and values just outside."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Printable text without surrogates; length counts code points, as the constraints do.
letters = st.characters(blacklist_categories=("Cs", "Cc"))


def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(letters, min_size=min_size, max_size=max_size)


emails = st.builds(
    "{}@{}.{}".format,
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20),
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=15),
    st.sampled_from(["com", "org", "io", "example"]),
)
bad_emails = st.sampled_from(
    ["", "plainaddress", "@example.com", "ada@", "ada@@example.com", "ada example@example.com"]
)

#: (field, strategy of a valid value, strategy of an invalid value) for the create request.
CREATE_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "firstName": (text(1, 256), st.one_of(st.just(""), text(257, 300))),
    "lastName": (text(0, 256), text(257, 300)),
    "email": (emails, bad_emails),
    "role": (text(1, 256), st.one_of(st.just(""), text(257, 300))),
    "company": (text(0, 256), text(257, 300)),
    "organizationId": (text(0, 256), text(257, 300)),
    "allowCustomerPortalAccess": (st.booleans(), st.sampled_from(["true", 1, None, "yes"])),
    "password": (text(8, 256), st.one_of(text(0, 7), text(257, 300))),
}


@st.composite
def create_requests(draw: st.DrawFn) -> dict[str, Any]:
    return {name: draw(valid) for name, (valid, _) in CREATE_FIELDS.items()}


@st.composite
def create_requests_with_one_bad_field(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    body = draw(create_requests())
    field = draw(st.sampled_from(sorted(CREATE_FIELDS)))
    body[field] = draw(CREATE_FIELDS[field][1])
    return field, body


@st.composite
def update_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Any subset of the update fields, each valid (password is not an update field)."""
    names = draw(st.sets(st.sampled_from(sorted(set(CREATE_FIELDS) - {"password"}))))
    return {name: draw(CREATE_FIELDS[name][0]) for name in names}

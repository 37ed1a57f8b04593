"""Hypothesis strategies for the seeds' constraints: valid values and values just outside."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Printable text without surrogates; length counts code points, as the constraints do.
letters = st.characters(blacklist_categories=("Cs", "Cc"))

Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]


def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(letters, min_size=min_size, max_size=max_size)


def bounded(min_size: int, max_size: int) -> Field:
    """Text within ``min_size..max_size`` and text just outside (below the minimum, above it)."""
    outside = text(max_size + 1, max_size + 40)
    if min_size > 0:
        outside = st.one_of(text(0, min_size - 1), outside)
    return text(min_size, max_size), outside


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
CREATE_FIELDS: dict[str, Field] = {
    "firstName": bounded(1, 256),
    "lastName": bounded(0, 256),
    "email": (emails, bad_emails),
    "role": bounded(1, 256),
    "company": bounded(0, 256),
    "organizationId": bounded(0, 256),
    "allowCustomerPortalAccess": (st.booleans(), st.sampled_from(["true", 1, None, "yes"])),
    "password": bounded(8, 256),
}
#: The update request: the create fields but the password, each optional.
UPDATE_FIELDS = {k: v for k, v in CREATE_FIELDS.items() if k != "password"}


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
    names = draw(st.sets(st.sampled_from(sorted(UPDATE_FIELDS))))
    return {name: draw(UPDATE_FIELDS[name][0]) for name in names}


@st.composite
def update_requests_with_one_bad_field(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    body = draw(update_requests())
    field = draw(st.sampled_from(sorted(UPDATE_FIELDS)))
    body[field] = draw(UPDATE_FIELDS[field][1])
    return field, body


# --- JSON Patch: the dialect's document -------------------------------------------------------

role_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=","),
    min_size=1,
    max_size=60,
)
bad_role_lists = st.one_of(
    st.just([]),
    st.lists(st.sampled_from(["", "a,b", " padded", "padded ", "x" * 257]), min_size=1),
)

#: Replaceable properties of the JSON Patch document: (valid value, invalid value).
PATCH_FIELDS: dict[str, Field] = {
    "displayName": bounded(1, 513),
    "firstName": bounded(1, 256),
    "lastName": bounded(0, 256),
    "email": (emails, bad_emails),
    "roles": (st.lists(role_names, min_size=1, max_size=4), bad_role_lists),
}


# --- GraphQL: the ResellerUserEdit input -------------------------------------------------------

int32 = st.integers(0, 2**31 - 1)
negative_int32 = st.integers(-(2**31), -1)
#: 1990-12-10 in Arabic-Indic digits: digits to Python, not to the YYYY-MM-DD format.
NON_ASCII_DATE = "\u0661\u0669\u0669\u0660-\u0661\u0662-\u0661\u0660"
birth_dates = st.dates().map(lambda d: d.isoformat())
bad_birth_dates = st.sampled_from(
    ["", "10/12/1990", "1990-12-1", "19901210", "1990-02-30", "1990-13-01", NON_ASCII_DATE]
)

#: ``userProfileEdit`` fields: (valid value, invalid value). The bounds other than the names' are
#: the project's own (the seed gives none); see docs/dialects.md.
PROFILE_FIELDS: dict[str, Field] = {
    "firstName": bounded(1, 256),
    "lastName": bounded(0, 256),
    "phone": bounded(0, 64),
    "address": bounded(0, 256),
    "city": bounded(0, 256),
    "country": bounded(0, 256),
    "postalCode": bounded(0, 32),
    "birthDate": (birth_dates, bad_birth_dates),
}
#: ``resellerUserEdit`` fields besides the profile: (valid value, invalid value).
EDIT_FIELDS: dict[str, Field] = {
    "password": bounded(8, 256),
    "resellerId": (int32, negative_int32),
    "groupId": (int32, negative_int32),
    "multiLoginCount": (int32, negative_int32),
}


@st.composite
def reseller_user_edits(draw: st.DrawFn) -> dict[str, Any]:
    """Any subset of ``resellerUserEdit`` and of its ``userProfileEdit``, each value valid."""
    edit = {k: draw(v) for k, (v, _) in EDIT_FIELDS.items() if draw(st.booleans())}
    if draw(st.booleans()):
        profile = PROFILE_FIELDS.items()
        edit["userProfileEdit"] = {k: draw(v) for k, (v, _) in profile if draw(st.booleans())}
    return edit


@st.composite
def reseller_user_edits_with_one_bad_field(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid edit with one field made invalid; returns its dotted path and the edit."""
    edit = draw(reseller_user_edits())
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(EDIT_FIELDS)))
        edit[field] = draw(EDIT_FIELDS[field][1])
        return field, edit
    field = draw(st.sampled_from(sorted(PROFILE_FIELDS)))
    edit.setdefault("userProfileEdit", {})[field] = draw(PROFILE_FIELDS[field][1])
    return f"userProfileEdit.{field}", edit

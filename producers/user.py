"""The reseller user as subscribers receive it: the 200/201 response object of the REST seeds.

camelCase on the wire, snake_case in code, frozen, unknown fields refused (a ``password`` above all:
it is input to the API and never leaves the producer). Length bounds are the seeds' constraints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
)
from pydantic.alias_generators import to_camel


def _only_text_or_datetime(value: Any) -> Any:
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an RFC 3339 timestamp string")


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset (e.g. 2019-08-24T14:15:22Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00: the instant lies before year 1 in UTC
        raise ValueError("timestamp is out of range once converted to UTC") from None


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; milliseconds only when present."""
    value = value.astimezone(UTC).replace(tzinfo=None)
    if value.microsecond:
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.isoformat(timespec="seconds") + "Z"


Timestamp = Annotated[
    datetime,
    BeforeValidator(_only_text_or_datetime),
    Field(strict=False),
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]

# The seeds' constraints ("//min: 1" reads as min length 1).
Name = Annotated[str, Field(min_length=1, max_length=256)]
OptionalText = Annotated[str, Field(min_length=0, max_length=256)]
Role = Annotated[str, Field(min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]


class Contract(BaseModel):
    """Base of every wire model: strict types, camelCase aliases, frozen, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        strict=True,
        str_strip_whitespace=False,
    )


class Address(Contract):
    address_line1: str | None = Field(default=None, max_length=256)
    address_line2: str | None = Field(default=None, max_length=256)
    city: str | None = Field(default=None, max_length=256)
    state: str | None = Field(default=None, max_length=256)
    country: str | None = Field(default=None, max_length=256)
    postal_code: str | None = Field(default=None, max_length=256)


class Organization(Contract):
    id: Identifier
    created_at: Timestamp
    updated_at: Timestamp
    name: str = Field(max_length=256)
    email: EmailStr | None = None
    description: str | None = None
    allowed_users: int = Field(ge=0)
    address: Address | None = None


class ResellerUser(Contract):
    """The ``data`` of every ``reseller.user.*`` webhook."""

    id: Identifier
    created_at: Timestamp
    updated_at: Timestamp
    # Display name; the seeds derive it from first and last name (256 + space + 256).
    name: str = Field(max_length=513)
    first_name: Name
    last_name: OptionalText | None = None
    email: EmailStr
    role: Role
    two_factor_enabled: bool = False
    google_sso_enabled: bool = False
    last_login_at: Timestamp | None = None
    organization_id: OptionalText | None = None
    organization: Organization | None = None
    company: OptionalText | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase dict, every field present (absent values as ``null``)."""
        return self.model_dump(mode="json", by_alias=True)

"""SDK-HMAC-SHA256 request signing, byte-for-byte as the official Huawei Cloud SDK does it.

The canonical pieces are public functions because the simulator verifies signatures with the
very same algorithm (a server that accepted anything would prove nothing). Secrets live in
:class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote

ALGORITHM: Final = "SDK-HMAC-SHA256"
DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256: Final = hashlib.sha256(b"").hexdigest()


class Secret:
    """A string that must never be printed: ``repr``/``str``/format all show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value somewhere we do not control.
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """AK/SK credentials, optionally temporary (with a security token)."""

    ak: str
    sk: Secret = field(repr=False)
    security_token: Secret | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        token = ", security_token=Secret('***')" if self.security_token else ""
        return f"Credentials(ak={self.ak!r}, sk=Secret('***'){token})"


#: Characters quote(s, safe="~") leaves alone. Paths and queries made only of these (every
#: request the collector makes) are their own encoding, and skip urllib's slower quote.
_BARE: Final = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
_BARE_PATH: Final = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch


def _encode(value: str) -> str:
    # The SDK uses quote(s, safe="~"): unreserved characters and "~" stay bare, "/" is encoded.
    return value if _BARE(value) else quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """The path, each segment percent-encoded, always ending in ``/``."""
    if _BARE_PATH(path):
        encoded = path  # nothing to decode, nothing to encode
    else:
        encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted by raw key then raw value (as the SDK sorts them), each side encoded."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def signed_header_names(headers: Iterable[str]) -> list[str]:
    """Every header whose name has no ``_``, lower-cased and sorted."""
    return sorted(name.lower() for name in headers if "_" not in name)


def canonical_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed: Sequence[str],
    body: bytes = b"",
    query_string: str | None = None,
) -> str:
    """The canonical request string; ``headers`` keys must already be lower-case.

    ``query_string``, when given, is ``canonical_query(query)`` already computed.
    """
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query) if query_string is None else query_string,
            canonical_headers,
            ";".join(signed),
            body_hash,
        )
    )


def string_to_sign(sdk_date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def format_sdk_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


class _SdkClock:
    """X-Sdk-Date for now, formatted once a second rather than once a request."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._text = time.strftime(DATE_FORMAT, time.gmtime(second))
            self._second = second
        return self._text


_SDK_CLOCK: Final = _SdkClock()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What to put on the wire: the exact query string that was signed, and every header."""

    query_string: str
    headers: dict[str, str]


class Signer:
    """Signs requests for one set of credentials.

    ``repr`` shows only the access key; the secret key stays inside :class:`Secret`.
    """

    __slots__ = ("_credentials", "_key")

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._key = credentials.sk.reveal().encode("utf-8")

    def __repr__(self) -> str:
        return f"Signer(ak={self._credentials.ak!r})"

    @property
    def access_key(self) -> str:
        return self._credentials.ak

    def sign(
        self,
        *,
        method: str,
        host: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        project_id: str | None = None,
        body: bytes = b"",
        now: datetime | None = None,
    ) -> SignedRequest:
        """Return the headers (with ``Authorization``) and query string to send.

        ``host`` is ``host[:port]`` exactly as it will be sent in the ``Host`` header.
        """
        out: dict[str, str] = dict(headers or {})
        out["X-Sdk-Date"] = _SDK_CLOCK.now() if now is None else format_sdk_date(now)
        out["Host"] = host
        if project_id:
            out["X-Project-Id"] = project_id
        token = self._credentials.security_token
        if token:
            out["X-Security-Token"] = token.reveal()
        lowered = {name.lower(): value for name, value in out.items()}
        signed = signed_header_names(out)
        query_string = canonical_query(query)
        canonical = canonical_request(
            method=method,
            path=path,
            query=query,
            headers=lowered,
            signed=signed,
            body=body,
            query_string=query_string,
        )
        to_sign = string_to_sign(out["X-Sdk-Date"], canonical)
        digest = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        out["Authorization"] = (
            f"{ALGORITHM} Access={self._credentials.ak}, "
            f"SignedHeaders={';'.join(signed)}, Signature={digest}"
        )
        return SignedRequest(query_string=query_string, headers=out)


@dataclass(frozen=True, slots=True)
class AuthorizationHeader:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> AuthorizationHeader | None:
    """Parse ``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``; None if malformed."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    try:
        return AuthorizationHeader(
            access_key=parts["Access"],
            signed_headers=tuple(parts["SignedHeaders"].split(";")),
            signature=parts["Signature"],
        )
    except KeyError:
        return None

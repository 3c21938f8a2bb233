"""Our signer equals the official SDK's, and secrets never show in a repr."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.auth import Credentials, Secret, Signer, parse_authorization

WHEN = datetime(2026, 11, 24, 14, 30, 5, tzinfo=UTC)

# Printable text, including reserved and non-ASCII characters, for paths and queries.
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12)
segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/%"),
    min_size=1,
    max_size=12,
)
header_name = st.from_regex(r"X-[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True)
header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20
).filter(lambda v: v.strip() != "")


def sdk_sign(
    *,
    ak: str,
    sk: str,
    token: str | None,
    project_id: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
) -> SdkRequest:
    request = SdkRequest(
        method="GET",
        schema="https",
        host=host,
        resource_path=path,
        query_params=list(query),
        header_params={**headers, "X-Sdk-Date": WHEN.strftime("%Y%m%dT%H%M%SZ")},
        body="",
    )
    creds = BasicCredentials(ak, sk, project_id)
    if token:
        creds = creds.with_security_token(token)
    return creds.sign_request(request)


def ours_sign(
    *,
    ak: str,
    sk: str,
    token: str | None,
    project_id: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
) -> tuple[str, dict[str, str]]:
    signer = Signer(
        Credentials(ak=ak, sk=Secret(sk), security_token=Secret(token) if token else None)
    )
    signed = signer.sign(
        method="GET",
        host=host,
        path=path,
        query=query,
        headers=headers,
        project_id=project_id,
        now=WHEN,
    )
    return signed.query_string, signed.headers


@settings(max_examples=400, deadline=None)
@given(
    segments=st.lists(segment, min_size=1, max_size=5),
    trailing=st.booleans(),
    query=st.lists(st.tuples(text, text), max_size=6),
    headers=st.dictionaries(header_name, header_value, max_size=4),
    sk=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
    ),
    token=st.one_of(st.none(), st.text(alphabet="abcdefXYZ0123456789+/=", min_size=1, max_size=60)),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_signature_equals_official_sdk(
    segments: list[str],
    trailing: bool,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    sk: str,
    token: str | None,
    port: int | None,
) -> None:
    """For any path, query (unicode, reserved chars, repeated keys) and headers: same bytes."""
    # Header names are case-insensitive; the SDK keeps the last of a case-clash, so avoid them.
    seen: set[str] = set()
    headers = {k: v for k, v in headers.items() if not (k.lower() in seen or seen.add(k.lower()))}
    headers = {"User-Agent": "collector-test", "Content-Type": "application/json", **headers}
    path = "/" + "/".join(segments) + ("/" if trailing else "")
    host = "dws.cn-north-4.myhuaweicloud.com" + (f":{port}" if port else "")
    args = {
        "ak": "AKTESTEXAMPLE0000001",
        "sk": sk,
        "token": token,
        "project_id": "0536cdee2200d5912f7cc00b877980f1",
        "host": host,
        "path": path,
        "query": query,
        "headers": headers,
    }
    sdk = sdk_sign(**args)  # type: ignore[arg-type]
    query_string, ours = ours_sign(**args)  # type: ignore[arg-type]
    assert ours["Authorization"] == sdk.header_params["Authorization"]
    assert sorted(k.lower() for k in ours) == sorted(k.lower() for k in sdk.header_params)
    # The SDK's uri is the raw path, then "?" and the canonical query when there is one.
    sdk_query = sdk.uri[len(path) + 1 :] if sdk.uri != path else ""
    assert query_string == sdk_query


def test_known_signature_vector() -> None:
    """A hand-checked vector: the signature over the doc's example request."""
    _, headers = ours_sign(
        ak="AKTEST",
        sk="SKsecret~x",
        token=None,
        project_id="0536cdee2200d5912f7cc00b877980f1",
        host="dws.cn-north-4.myhuaweicloud.com",
        path="/v1/0536cdee2200d5912f7cc00b877980f1/clusters/c719b1a7-c85c-4cb5-a721-7694908c2c11/upgrade-management/records",
        query=[("offset", "0"), ("limit", "10")],
        headers={"Content-Type": "application/json"},
    )
    parsed = parse_authorization(headers["Authorization"])
    assert parsed is not None
    assert parsed.signed_headers == ("content-type", "host", "x-project-id", "x-sdk-date")
    sdk = sdk_sign(
        ak="AKTEST",
        sk="SKsecret~x",
        token=None,
        project_id="0536cdee2200d5912f7cc00b877980f1",
        host="dws.cn-north-4.myhuaweicloud.com",
        path="/v1/0536cdee2200d5912f7cc00b877980f1/clusters/c719b1a7-c85c-4cb5-a721-7694908c2c11/upgrade-management/records",
        query=[("offset", "0"), ("limit", "10")],
        headers={"Content-Type": "application/json"},
    )
    assert headers["Authorization"] == sdk.header_params["Authorization"]


def test_date_of_now_is_the_current_second_and_signed_as_such() -> None:
    """Without ``now`` the X-Sdk-Date is the wall clock's (cached per second, never stale)."""
    signer = Signer(Credentials(ak="AK", sk=Secret("SK")))
    request = {"method": "GET", "host": "h", "path": "/v1/p/x", "query": [("limit", "10")]}
    for _ in range(3):
        before = datetime.now(UTC).replace(microsecond=0)
        signed = signer.sign(**request)  # type: ignore[arg-type]
        after = datetime.now(UTC)
        date = datetime.strptime(signed.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert before <= date <= after
        again = signer.sign(**request, now=date)  # type: ignore[arg-type]
        assert signed.headers["Authorization"] == again.headers["Authorization"]
        time.sleep(0.6)  # cross a second boundary at least once


def test_secrets_never_show_in_repr_or_str() -> None:
    """repr/str/format of Secret, Credentials and Signer never contain the SK or token."""
    sk, token = "S3cr3tKeyValue-DoNotPrint", "T0kenValue-DoNotPrint"
    creds = Credentials(ak="AKTEST", sk=Secret(sk), security_token=Secret(token))
    signer = Signer(creds)
    for text_form in (
        repr(creds),
        str(creds),
        repr(signer),
        f"{creds.sk}",
        f"{creds.sk!r}",
        str(creds.sk),
    ):
        assert sk not in text_form
        assert token not in text_form
    assert "AKTEST" in repr(creds)


def test_secret_refuses_pickling() -> None:
    """A Secret cannot be serialized by pickle (it would leave our control)."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))

"""The region table matches NOTES §4 and the SDK; project names map to regions."""

from __future__ import annotations

import pytest

from collector.endpoints import KNOWN_REGIONS, dws_endpoint, region_of_project_name

NO_OVERRIDES: dict[str, str] = {}


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("cn-north-4", "https://dws.cn-north-4.myhuaweicloud.com"),
        ("ap-southeast-1", "https://dws.ap-southeast-1.myhuaweicloud.com"),
        ("my-kualalumpur-1", "https://dws.my-kualalumpur-1.myhuaweicloud.com"),
        ("eu-west-101", "https://dws.eu-west-101.myhuaweicloud.eu"),
        ("cn-south-4", "https://dws.cn-south-4.myhuaweicloud.cn"),
        ("cn-north-12", "https://dws.cn-north-12.myhuaweicloud.cn"),
        ("cn-east-4", "https://dws.cn-east-4.myhuaweicloud.cn"),
        ("tr-west-1", "https://dws.tr-west-1.myhuaweicloud.cn"),
        ("ap-southeast-4", "https://dws.ap-southeast-4.myhuaweicloud.cn"),
    ],
)
def test_known_region_endpoint(region: str, expected: str) -> None:
    """Known regions get the SDK's URL, including the .eu and .cn exceptions."""
    assert dws_endpoint(region, NO_OVERRIDES) == expected


def test_unknown_region_has_no_endpoint() -> None:
    """A region nobody knows and nobody overrode has no endpoint."""
    assert dws_endpoint("xx-nowhere-1", NO_OVERRIDES) is None
    assert dws_endpoint("", NO_OVERRIDES) is None
    assert dws_endpoint("CN-NORTH-4", NO_OVERRIDES) is None


def test_override_wins_for_known_and_unknown_regions() -> None:
    """An override replaces the SDK's URL and makes an unknown region usable."""
    overrides = {"cn-north-4": "http://127.0.0.1:8080", "my-private-1": "https://dws.example"}
    assert dws_endpoint("cn-north-4", overrides) == "http://127.0.0.1:8080"
    assert dws_endpoint("my-private-1", overrides) == "https://dws.example"
    assert dws_endpoint("cn-east-3", overrides) == "https://dws.cn-east-3.myhuaweicloud.com"


def test_known_regions_are_the_31_of_notes() -> None:
    """KNOWN_REGIONS is exactly the list in NOTES §4."""
    listed = (
        "eu-west-101, cn-north-9, cn-east-3, cn-east-2, cn-north-1, cn-north-4, cn-southwest-2, "
        "cn-north-2, cn-south-1, cn-south-4, cn-north-12, cn-east-4, ap-southeast-1, "
        "ap-southeast-2, ap-southeast-3, af-south-1, la-south-2, sa-brazil-1, na-mexico-1, "
        "la-north-2, tr-west-1, ap-southeast-4, cn-east-5, af-north-1, ru-moscow-1, ae-ad-1, "
        "my-kualalumpur-1, cn-north-11, cn-southwest-3, ap-southeast-5, me-east-1"
    )
    assert frozenset(listed.split(", ")) == KNOWN_REGIONS
    assert len(KNOWN_REGIONS) == 31


def test_table_equals_the_official_sdk() -> None:
    """Every region and URL is the one huaweicloudsdkdws ships."""
    dws_region = pytest.importorskip("huaweicloudsdkdws.v2.region.dws_region")
    regions = dws_region.DwsRegion.static_fields.items()
    sdk = {name: region.endpoints[0] for name, region in regions}
    assert all(len(region.endpoints) == 1 for _, region in regions)
    assert set(sdk) == KNOWN_REGIONS
    assert {region: dws_endpoint(region, NO_OVERRIDES) for region in KNOWN_REGIONS} == sdk


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cn-north-4", "cn-north-4"),
        ("cn-north-4_analytics", "cn-north-4"),
        ("eu-west-101_a_b", "eu-west-101"),
        ("MOS", None),
        ("MOS_sub", None),
        ("cn-north-99", None),
        ("", None),
        ("_analytics", None),
    ],
)
def test_region_of_project_name(name: str, expected: str | None) -> None:
    """A project is its region, or region_subproject; other names are not regions."""
    assert region_of_project_name(name) == expected


def test_region_of_project_name_honours_overrides() -> None:
    """A private region becomes a region once it has an endpoint override."""
    overrides = {"my-private-1": "https://dws.example"}
    assert region_of_project_name("my-private-1_team", overrides) == "my-private-1"
    assert region_of_project_name("my-private-1_team") is None

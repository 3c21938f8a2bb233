"""Where each region's DWS API lives, and which region an IAM project belongs to.

The table is the one the official SDK ships (``huaweicloudsdkdws`` 3.1.219, ``DwsRegion``): every
region is ``https://dws.{region}.myhuaweicloud.com`` except a few on another top-level domain.
Private clouds, new regions and tests supply per-region overrides, which always win.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: Regions whose DWS endpoint is not on ``myhuaweicloud.com``.
_DOMAIN_EXCEPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "eu-west-101": "myhuaweicloud.eu",
        "cn-south-4": "myhuaweicloud.cn",
        "cn-north-12": "myhuaweicloud.cn",
        "cn-east-4": "myhuaweicloud.cn",
        "tr-west-1": "myhuaweicloud.cn",
        "ap-southeast-4": "myhuaweicloud.cn",
    }
)
_DEFAULT_DOMAIN: Final = "myhuaweicloud.com"

#: Every region the SDK knows, in the SDK's order (an order the simulator's fleets rely on).
SDK_REGIONS: Final[tuple[str, ...]] = (
    "eu-west-101",
    "cn-north-9",
    "cn-east-3",
    "cn-east-2",
    "cn-north-1",
    "cn-north-4",
    "cn-southwest-2",
    "cn-north-2",
    "cn-south-1",
    "cn-south-4",
    "cn-north-12",
    "cn-east-4",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "af-south-1",
    "la-south-2",
    "sa-brazil-1",
    "na-mexico-1",
    "la-north-2",
    "tr-west-1",
    "ap-southeast-4",
    "cn-east-5",
    "af-north-1",
    "ru-moscow-1",
    "ae-ad-1",
    "my-kualalumpur-1",
    "cn-north-11",
    "cn-southwest-3",
    "ap-southeast-5",
    "me-east-1",
)
KNOWN_REGIONS: Final[frozenset[str]] = frozenset(SDK_REGIONS)

_NO_OVERRIDES: Final[Mapping[str, str]] = MappingProxyType({})


def dws_endpoint(region: str, overrides: Mapping[str, str]) -> str | None:
    """The DWS base URL for ``region``: the override if any, else the SDK's; None if unknown."""
    if region in overrides:
        return overrides[region]
    if region not in KNOWN_REGIONS:
        return None
    domain = _DOMAIN_EXCEPTIONS.get(region, _DEFAULT_DOMAIN)
    return f"https://dws.{region}.{domain}"


def region_of_project_name(name: str, overrides: Mapping[str, str] = _NO_OVERRIDES) -> str | None:
    """The region of an IAM project named ``region`` or ``region_subproject``.

    None when the part before the first ``_`` has no DWS endpoint (neither known nor
    overridden): IAM also lists projects such as ``MOS`` that are not regions at all.
    """
    region = name.partition("_")[0]
    if not region or dws_endpoint(region, overrides) is None:
        return None
    return region

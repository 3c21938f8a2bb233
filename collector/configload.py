"""Reading a configuration: from a YAML file and the environment to a :class:`Config`.

Everything a user can get wrong lives here and in :mod:`collector.configfile`, apart from the model
in :mod:`collector.config`, so that the rules and their messages are in one place and the modules
that only read settings do not import YAML, msgspec or the checks. ``load_config`` /
``parse_config`` work in four steps, the first three in :mod:`collector.configfile` (the
document: its syntax, its variables, its shape) and the last here (what the values mean):

1. parse with PyYAML's safe loader (duplicate keys are errors, every failure has a position);
2. expand ``${VAR}`` and ``${VAR:-default}`` (``$${`` is a literal ``${``) in string *values*,
   after parsing, so an environment value can never change the document's structure;
3. validate the shape with msgspec (unknown keys are errors, ranges are declared on the schema);
4. check what msgspec cannot (URLs, regions, project ids, duplicates, credentials files) and
   build the dataclasses.

Every failure is a :class:`~collector.errors.ConfigError` naming the file and the line and column,
the key path (``accounts[0].sk``) or the variable; no message ever contains a secret value.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from collector.auth import Credentials, Secret
from collector.compression import LEVEL_RANGES
from collector.config import (
    DEFAULT_IAM_ENDPOINT,
    AccountConfig,
    Config,
    HttpConfig,
    LimitsConfig,
    OutputConfig,
    PagingConfig,
    ProjectRef,
    RetryConfig,
)
from collector.configfile import (
    SECRET_KEYS,
    AccountSchema,
    ConfigSchema,
    HttpSchema,
    KeyPath,
    ProjectSchema,
    error,
    fmt,
    read_document,
    words,
)
from collector.endpoints import KNOWN_REGIONS, dws_endpoint
from collector.errors import ConfigError
from collector.outdir import render_dir


def load_config(path: Path, *, environ: Mapping[str, str]) -> Config:
    """Read, expand, validate and build the configuration in ``path``."""
    try:
        # utf-8-sig: editors on Windows like to start the file with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return parse_config(text, source=str(path), environ=environ)


def parse_config(text: str, *, source: str, environ: Mapping[str, str]) -> Config:
    """Build the configuration from YAML ``text``; ``source`` names it in error messages."""
    document = read_document(text, source=source, environ=environ)
    builder = _Builder(
        source=source,
        refs=document.refs,
        secrets=document.secrets,
        allow_http=bool(document.schema.allow_insecure_http),
        environ=environ,
    )
    return builder.config(document.schema)


def with_overrides(
    config: Config, *, concurrency: int | None = None, output_dir: str | None = None
) -> Config:
    """``config`` with command-line overrides applied, checked like the file's own values."""
    if concurrency is not None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        limits = dataclasses.replace(config.limits, concurrency=concurrency)
        config = dataclasses.replace(config, limits=limits)
    if output_dir is not None:
        if not output_dir.strip():
            raise ConfigError("the output directory must not be empty")
        config = dataclasses.replace(config, output=OutputConfig(dir=output_dir))
    return config


# --- Step 4: checks msgspec cannot make, and the dataclasses ---

#: Keys and tokens travel in HTTP headers: printable ASCII, no spaces.
_TOKEN: Final = re.compile(r"[!-~]+")
_PROJECT_ID: Final = re.compile(r"[0-9a-f]{32}")


def _given(section: msgspec.Struct | None) -> dict[str, Any]:
    """The keys a section set, so that the dataclass supplies every default."""
    if section is None:
        return {}
    values = ((name, getattr(section, name)) for name in section.__struct_fields__)
    return {name: value for name, value in values if value is not None}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1
    return address.is_loopback


class _Builder:
    def __init__(
        self,
        *,
        source: str,
        refs: Mapping[KeyPath, tuple[str, ...]],
        secrets: frozenset[str],
        allow_http: bool,
        environ: Mapping[str, str],
    ) -> None:
        self.source = source
        self.refs = refs
        self.secrets = secrets
        self.allow_http = allow_http
        self.environ = environ
        self.warnings: list[str] = []

    def fail(self, path: KeyPath, problem: str) -> ConfigError:
        return error(self.source, fmt(path), problem)

    def show(self, value: str, path: KeyPath) -> str:
        """``value`` (found at ``path``) as a message may quote it.

        Only the file's own text is quoted: a value that came from the environment is named by
        its variables instead (any variable may hold a secret), and a secret never shows.
        """
        if names := self.refs.get(path):
            return "the value from " + ", ".join(f"${{{name}}}" for name in names)
        return "a value containing a secret key" if self.is_secret(value) else repr(value)

    def is_secret(self, value: str) -> bool:
        return any(secret in value for secret in self.secrets)

    def config(self, schema: ConfigSchema) -> Config:
        top_endpoints = self.endpoints(schema.endpoints, ("endpoints",))
        top_iam = DEFAULT_IAM_ENDPOINT
        if schema.iam_endpoint is not None:
            top_iam = self.url(schema.iam_endpoint, ("iam_endpoint",))
        if not schema.accounts:
            raise self.fail(("accounts",), "at least one account is required")
        first: dict[str, int] = {}
        accounts: list[AccountConfig] = []
        for index, raw in enumerate(schema.accounts):
            if raw.name in first:
                path: KeyPath = ("accounts", index, "name")
                raise self.fail(
                    path,
                    f"duplicate account name {self.show(raw.name, path)} "
                    f"(also accounts[{first[raw.name]}].name)",
                )
            first[raw.name] = index
            accounts.append(self.account(index, raw, top_endpoints, top_iam))
        retry = RetryConfig(**_given(schema.retry))
        if retry.backoff_cap < retry.backoff_base:
            raise self.fail(("retry", "backoff_cap"), "must not be less than retry.backoff_base")
        limits = LimitsConfig(**_given(schema.limits))
        if limits.max_rate < limits.rate:
            raise self.fail(("limits", "max_rate"), "must not be less than limits.rate")
        output = OutputConfig(**_given(schema.output))
        if not output.dir.strip():
            raise self.fail(("output", "dir"), "must not be empty")
        try:
            render_dir(output.dir, started=datetime.now(UTC), run_id="check")
        except ConfigError as exc:
            raise self.fail(("output", "dir"), str(exc)) from None
        level = output.compression_level
        if level is not None:
            allowed = LEVEL_RANGES.get(output.compression)
            if allowed is None or level not in allowed:
                where = ("output", "compression_level")
                if allowed is None:
                    raise self.fail(where, "compression is none: there is no level to set")
                raise self.fail(
                    where,
                    f"{output.compression.value} levels are {allowed.start}..{allowed.stop - 1}",
                )
        return Config(
            accounts=tuple(accounts),
            limits=limits,
            http=self.http(schema.http),
            retry=retry,
            paging=PagingConfig(**_given(schema.paging)),
            output=output,
            warnings=tuple(self.warnings),
        )

    def http(self, schema: HttpSchema | None) -> HttpConfig:
        http = HttpConfig(**_given(schema))
        if http.ca_bundle is not None and not Path(http.ca_bundle).is_file():
            raise self.fail(("http", "ca_bundle"), f"no such file: {http.ca_bundle}")
        return http

    def account(
        self, index: int, raw: AccountSchema, top_endpoints: dict[str, str], top_iam: str
    ) -> AccountConfig:
        path: KeyPath = ("accounts", index)
        if not raw.name.strip():
            raise self.fail((*path, "name"), "must not be empty")
        if raw.profile is not None or raw.credentials_file is not None:
            if raw.ak is not msgspec.UNSET or raw.sk is not msgspec.UNSET:
                raise self.fail(path, "give either ak/sk or profile/credentials_file, not both")
            credentials = self.profile_credentials(raw, path)
        else:
            if isinstance(raw.ak, msgspec.UnsetType):
                raise self.fail((*path, "ak"), "required key is missing")
            if isinstance(raw.sk, msgspec.UnsetType):
                raise self.fail((*path, "sk"), "required key is missing")
            ak = self.token(raw.ak, (*path, "ak"))
            sk = Secret(self.token(raw.sk, (*path, "sk")))
            token = None
            if raw.security_token:  # empty (${HUAWEICLOUD_SDK_SECURITY_TOKEN:-}) means none
                token = Secret(self.token(raw.security_token, (*path, "security_token")))
            credentials = Credentials(ak=ak, sk=sk, security_token=token)
        endpoints = top_endpoints | self.endpoints(raw.endpoints, (*path, "endpoints"))
        iam = top_iam
        if raw.iam_endpoint is not None:
            iam = self.url(raw.iam_endpoint, (*path, "iam_endpoint"))
        return AccountConfig(
            name=raw.name,
            credentials=credentials,
            regions=self.regions(raw.regions or [], (*path, "regions"), endpoints),
            projects=self.projects(raw.projects or [], (*path, "projects"), endpoints),
            iam_endpoint=iam,
            endpoints=MappingProxyType(endpoints),
        )

    def profile_credentials(self, raw: AccountSchema, path: KeyPath) -> Credentials:
        """AK/SK from the SDK's credentials file (INI; a section per profile, default basic)."""
        where = raw.credentials_file or self.environ.get("HUAWEICLOUD_SDK_CREDENTIALS_FILE")
        file = Path(where) if where else Path.home() / ".huaweicloud" / "credentials"
        section = raw.profile or "basic"
        try:
            mode = file.stat().st_mode
        except OSError as exc:
            raise self.fail(path, f"credentials file {file}: {exc.strerror}") from None
        if mode & 0o077:
            raise self.fail(
                path,
                f"credentials file {file} is readable by others (mode {mode & 0o777:o});"
                f" run: chmod 600 {file}",
            )
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(file, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError) as exc:
            raise self.fail(
                path, f"credentials file {file} cannot be read: {type(exc).__name__}"
            ) from None
        if not parser.has_section(section):
            raise self.fail(path, f"credentials file {file} has no [{section}] section")
        values = parser[section]
        ak, sk = values.get("ak", "").strip(), values.get("sk", "").strip()
        if not ak or not sk or not _TOKEN.fullmatch(ak) or not _TOKEN.fullmatch(sk):
            raise self.fail(path, f"[{section}] in {file} needs non-empty ak and sk")
        token = values.get("security_token", "").strip()
        return Credentials(ak=ak, sk=Secret(sk), security_token=Secret(token) if token else None)

    def token(self, value: str, path: KeyPath) -> str:
        names = self.refs.get(path, ())
        origin = f" (it comes from {', '.join(f'${{{n}}}' for n in names)})" if names else ""
        if not value:
            raise self.fail(path, f"must not be empty{origin}")
        if not _TOKEN.fullmatch(value):
            raise self.fail(path, f"contains spaces, control or non-ASCII characters{origin}")
        if path[-1] in SECRET_KEYS and not names:
            self.warnings.append(
                f"{fmt(path)} is written in the config file in plain text; use ${{VAR}}"
            )
        return value

    def endpoints(self, raw: dict[str, object] | None, path: KeyPath) -> dict[str, str]:
        result: dict[str, str] = {}
        for region, url in (raw or {}).items():
            if not region.strip():
                raise self.fail(path, "a region name must not be empty")
            result[region] = self.url(url, (*path, region))
        return result

    def url(self, value: object, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected an http(s) URL, got {words(value)}")
        try:
            parts = urlsplit(value)
            valid = bool(parts.hostname) and parts.port == parts.port  # .port checks the port
        except ValueError:
            valid = False
        if not valid or parts.scheme not in {"http", "https"} or re.search(r"\s", value):
            raise self.fail(path, f"{self.show(value, path)} is not an http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise self.fail(path, "must not contain a user name or password")
        if parts.query or parts.fragment:
            raise self.fail(path, "must not contain a query (?) or fragment (#)")
        if (
            parts.scheme == "http"
            and not self.allow_http
            and not _is_loopback(parts.hostname or "")
        ):
            raise self.fail(
                path,
                f"{self.show(value, path)} is plain http:// to a host that is not loopback "
                "(127.0.0.0/8, ::1, localhost); use https:// or set allow_insecure_http: true",
            )
        # Callers append paths; one trailing slash would double the next one.
        return value.rstrip("/")

    def region(self, region: str, path: KeyPath, endpoints: Mapping[str, str]) -> None:
        if dws_endpoint(region, endpoints) is not None:
            return
        close = difflib.get_close_matches(region, sorted(KNOWN_REGIONS | endpoints.keys()), n=1)
        # A hint computed from a secret would say what the secret looks like.
        hint = f" (did you mean {close[0]!r}?)" if close and not self.is_secret(region) else ""
        raise self.fail(
            path,
            f"no DWS endpoint is known for region {self.show(region, path)}{hint}; "
            "if the region exists, add its URL under `endpoints`",
        )

    def regions(
        self, regions: list[str], path: KeyPath, endpoints: Mapping[str, str]
    ) -> tuple[str, ...]:
        for index, region in enumerate(regions):
            if region in regions[:index]:
                shown = self.show(region, (*path, index))
                raise self.fail((*path, index), f"region {shown} is listed twice")
            self.region(region, (*path, index), endpoints)
        return tuple(regions)

    def projects(
        self, projects: list[ProjectSchema], path: KeyPath, endpoints: Mapping[str, str]
    ) -> tuple[ProjectRef, ...]:
        first: dict[str, int] = {}
        for index, project in enumerate(projects):
            id_path = (*path, index, "id")
            if not _PROJECT_ID.fullmatch(project.id):
                raise self.fail(
                    id_path,
                    f"{self.show(project.id, id_path)} is not a project id "
                    "(32 lowercase hex characters)",
                )
            if project.id in first:
                where = fmt((*path, first[project.id], "id"))
                raise self.fail(id_path, f"project listed twice (also {where})")
            first[project.id] = index
            self.region(project.region, (*path, index, "region"), endpoints)
        return tuple(ProjectRef(id=p.id, region=p.region) for p in projects)

"""Reading a configuration: from a YAML file and the environment to a :class:`Config`.

Everything a user can get wrong lives here, apart from the model in :mod:`collector.config`, so
that the rules and their messages are in one place and the modules that only read settings do not
import YAML, msgspec or the checks. ``load_config`` / ``parse_config`` work in four steps:

1. parse with PyYAML's safe loader (duplicate keys are errors, every failure has a position);
2. expand ``${VAR}`` and ``${VAR:-default}`` (``$${`` is a literal ``${``) in string *values*,
   after parsing, so an environment value can never change the document's structure;
3. validate the shape with msgspec (unknown keys are errors, ranges are declared on the schema);
4. check what msgspec cannot (URLs, regions, project ids, duplicates) and build the dataclasses.

Every failure is a :class:`~collector.errors.ConfigError` naming the file and the line and column,
the key path (``accounts[0].sk``) or the variable; no message ever contains a secret value.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, TypeAlias
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi
import yaml

from collector.auth import Credentials, Secret
from collector.compression import LEVEL_RANGES, Compression
from collector.config import (
    DEFAULT_IAM_ENDPOINT,
    AccountConfig,
    Config,
    HttpConfig,
    LimitsConfig,
    OffsetMode,
    OutputConfig,
    PagingConfig,
    ProjectRef,
    RetryConfig,
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
    try:
        data = _load_yaml(text, source)
        if data is None:
            raise _error(source, "", "the file is empty; at least `accounts` is required")
        if not isinstance(data, dict):
            raise _error(source, "", f"the top level must be a mapping, got {_words(data)}")
        expander = _Expander(source=source, environ=environ)
        expanded = expander.expand(data, ())
        try:
            schema = msgspec.convert(expanded, _ConfigSchema, strict=False)
        except msgspec.ValidationError as exc:
            raise _schema_error(source, exc) from exc
    except RecursionError:
        raise ConfigError(f"{source}: the document is nested too deeply") from None
    builder = _Builder(
        source=source,
        refs=expander.refs,
        secrets=_secret_values(expanded),
        allow_http=bool(schema.allow_insecure_http),
        environ=environ,
    )
    return builder.config(schema)


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


# --- Step 3's schema: the YAML's shape. None means "not given": the dataclass default. ---


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _ProjectSchema(_Strict):
    id: str
    region: str


class _AccountSchema(_Strict):
    name: str
    # Required unless `profile` names a section of a credentials file. UNSET (absent) is told
    # apart from null, which stays a type error like everywhere else.
    ak: str | msgspec.UnsetType = msgspec.UNSET
    sk: str | msgspec.UnsetType = msgspec.UNSET
    security_token: str | None = None
    profile: str | None = None
    credentials_file: str | None = None
    regions: list[str] | None = None
    projects: list[_ProjectSchema] | None = None
    iam_endpoint: str | None = None
    # Values are checked by _Builder.url, which can name the region in its message.
    endpoints: dict[str, object] | None = None


class _LimitsSchema(_Strict):
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    per_endpoint: Annotated[int, msgspec.Meta(ge=1)] | None = None
    rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    adaptive: bool | None = None


class _HttpSchema(_Strict):
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    read_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    request_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] | None = None
    ca_bundle: str | None = None


class _RetrySchema(_Strict):
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Zero is allowed so that tests can run without waiting.
    backoff_base: Annotated[float, msgspec.Meta(ge=0)] | None = None
    backoff_cap: Annotated[float, msgspec.Meta(ge=0)] | None = None
    retry_after_max: Annotated[float, msgspec.Meta(ge=0)] | None = None
    budget_ratio: Annotated[float, msgspec.Meta(ge=0)] | None = None
    budget_minimum: Annotated[int, msgspec.Meta(ge=0)] | None = None
    passes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    pass_delay: Annotated[float, msgspec.Meta(ge=0)] | None = None
    breaker_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    breaker_cooldown: Annotated[float, msgspec.Meta(ge=0)] | None = None


class _PagingSchema(_Strict):
    page_size: Annotated[int, msgspec.Meta(ge=1)] | None = None
    offset_mode: OffsetMode | None = None
    max_pages: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_rereads: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _OutputSchema(_Strict):
    dir: str | None = None
    compression: Compression | None = None
    compression_level: int | None = None
    since_run: str | None = None


class _ConfigSchema(_Strict):
    accounts: list[_AccountSchema]
    iam_endpoint: str | None = None
    endpoints: dict[str, object] | None = None
    allow_insecure_http: bool | None = None
    limits: _LimitsSchema | None = None
    http: _HttpSchema | None = None
    retry: _RetrySchema | None = None
    paging: _PagingSchema | None = None
    output: _OutputSchema | None = None


# --- Messages, and step 3's msgspec errors in our words ---

#: A key path: mapping keys and list indexes from the top of the document.
_Path: TypeAlias = tuple[str | int, ...]


def _fmt(path: _Path) -> str:
    """``("accounts", 0, "sk")`` -> ``accounts[0].sk``."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out


def _error(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


#: msgspec's type names, as a YAML user would say them.
_TYPE_WORDS: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean (true/false)",
    "null": "null (an empty value)",
    "array": "a list",
    "object": "a mapping",
    "bytes": "binary data",
    "set": "a set",
    "date": "a date",
    "datetime": "a timestamp",
}
_PY_TYPE_NAMES: Final = {bool: "bool", int: "int", float: "float", str: "str", list: "array"}


def _words(value: object) -> str:
    if value is None:
        return _TYPE_WORDS["null"]
    if isinstance(value, dict):
        return _TYPE_WORDS["object"]
    name = _PY_TYPE_NAMES.get(type(value), type(value).__name__)
    return _TYPE_WORDS.get(name, name)


def _type_words(spec: str) -> str:
    """``object | null`` -> ``a mapping``: null only means "use the default", so leave it out."""
    names = [name for name in spec.split(" | ") if name != "null"] or ["null"]
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


_MSGSPEC_MESSAGE: Final = re.compile(
    r"(?P<what>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?", re.DOTALL
)
_EXPECTED: Final = re.compile(r"Expected `(?P<want>[^`]*)`(?P<rest>.*?)(?:, got `(?P<got>[^`]*)`)?")


def _schema_error(source: str, exc: msgspec.ValidationError) -> ConfigError:
    """Rewrite msgspec's ``Expected `int`, got `str` - at `$.limits.concurrency``` our way."""
    match = _MSGSPEC_MESSAGE.fullmatch(str(exc))
    assert match is not None  # the pattern matches any string
    what, path = match["what"], _msgspec_path(match["path"] or "")
    where = _fmt(path)
    if match["key"]:
        return _error(source, where or "top level", "keys must be strings")
    if found := re.fullmatch(r"Object contains unknown field `(.*)`", what, re.DOTALL):
        valid = _field_names(path)
        close = difflib.get_close_matches(found[1], valid, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"valid keys: {', '.join(valid)}"
        return _error(source, _fmt((*path, found[1])), f"unknown key; {hint}")
    if found := re.fullmatch(r"Object missing required field `(.*)`", what, re.DOTALL):
        return _error(source, _fmt((*path, found[1])), "required key is missing")
    if what.startswith("Invalid enum value"):
        # msgspec quotes the bad value; name the choices instead (the value may be anything).
        choices = ", ".join(str(member.value) for member in OffsetMode)
        return _error(source, where, f"must be one of {choices}")
    if found := _EXPECTED.fullmatch(what):
        got = f", got {_type_words(found['got'])}" if found["got"] else ""
        return _error(source, where, f"expected {_type_words(found['want'])}{found['rest']}{got}")
    return _error(source, where, what[:1].lower() + what[1:])


def _msgspec_path(text: str) -> _Path:
    """``.accounts[0].sk`` -> ``("accounts", 0, "sk")``."""
    return tuple(
        int(index) if index.isdigit() else key or f"[{index}]"
        for key, index in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", text)
    )


def _field_names(path: _Path) -> list[str]:
    """The keys the schema allows at ``path`` (a mapping), for "did you mean" hints."""
    node: mi.Type = mi.type_info(_ConfigSchema)
    for segment in (*path, None):
        if isinstance(node, mi.UnionType):
            node = next(t for t in node.types if not isinstance(t, mi.NoneType))
        if segment is None:
            break
        if isinstance(node, mi.StructType):
            node = next(f.type for f in node.fields if f.name == segment)
        elif isinstance(node, mi.ListType | mi.DictType):
            node = node.item_type if isinstance(node, mi.ListType) else node.value_type
    return [f.name for f in node.fields] if isinstance(node, mi.StructType) else []


# --- Step 1: YAML ---


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, made strict and precise.

    PyYAML silently keeps the last of two equal keys, and lets plain Python errors escape for
    malformed scalars such as ``2023-13-45`` or ``!!int x``: both become positioned YAML errors.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            kind = node.tag.rpartition(":")[2]
            detail = f" ({exc})" if isinstance(exc, ValueError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {kind} value{detail}", node.start_mark
            ) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            # Merge keys (<<) may legitimately repeat keys they bring in.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                key = self.construct_object(key_node)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {first[key]})",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _load_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.context and exc.problem:
            at = exc.context_mark
            position = f" at line {at.line + 1}, column {at.column + 1}" if at else ""
            problem += f" ({exc.context}{position})"
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _error(source, where, f"invalid YAML: {problem}") from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        where = f"line {line}, column {column}"
        raise _error(source, where, f"invalid YAML: character U+{char:04X} is not allowed") from exc
    except yaml.YAMLError as exc:
        raise _error(source, "", f"invalid YAML: {exc}") from exc


# --- Step 2: ${VAR} expansion ---

_REFERENCE: Final = re.compile(
    r"\$\$\{"  # an escaped, literal "${"
    r"|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>(?:[^}$]|\$(?!\{))*))?\})?"
)
#: Aliases can make a small file hold billions of values; no real config comes near this.
_MAX_VALUES: Final = 100_000


class _Expander:
    """Expands references in every string value, remembering which path used which variables."""

    def __init__(self, *, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.refs: dict[_Path, tuple[str, ...]] = {}
        self._left = _MAX_VALUES
        self._open: set[int] = set()

    def expand(self, value: object, path: _Path) -> object:
        self._left -= 1
        if self._left < 0:
            raise _error(self.source, "", f"more than {_MAX_VALUES} values (through aliases)")
        if isinstance(value, str):
            return self._string(value, path)
        if not isinstance(value, dict | list):
            return value
        if id(value) in self._open:
            raise _error(self.source, _fmt(path), "a YAML alias refers to a value containing it")
        self._open.add(id(value))
        try:
            if isinstance(value, dict):
                return {k: self.expand(v, (*path, str(k))) for k, v in value.items()}
            return [self.expand(v, (*path, i)) for i, v in enumerate(value)]
        finally:
            self._open.discard(id(value))

    def _string(self, text: str, path: _Path) -> str:
        names: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match[0] == "$${":
                return "${"
            name, default = match["name"], match["default"]
            if name is None:
                raise _error(
                    self.source,
                    _fmt(path),
                    "malformed reference: write ${NAME} or ${NAME:-default} "
                    "(and $${ for a literal ${)",
                )
            names.append(name)
            value = self.environ.get(name)
            if default is not None and not value:  # shell semantics: unset or empty
                return default
            if value is None:
                raise _error(
                    self.source,
                    _fmt(path),
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give it a default)",
                )
            return value

        result = _REFERENCE.sub(substitute, text)
        if names:
            self.refs[path] = tuple(names)
        return result


_SECRET_KEYS: Final = frozenset({"sk", "security_token"})


def _secret_values(data: object) -> frozenset[str]:
    """Every account's secret key and token, as expanded."""
    found: set[str] = set()
    accounts = data.get("accounts") if isinstance(data, dict) else None
    for account in accounts if isinstance(accounts, list) else ():
        if isinstance(account, dict):
            found.update(v for k in _SECRET_KEYS if isinstance(v := account.get(k), str) and v)
    return frozenset(found)


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
        refs: Mapping[_Path, tuple[str, ...]],
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

    def fail(self, path: _Path, problem: str) -> ConfigError:
        return _error(self.source, _fmt(path), problem)

    def show(self, value: str, path: _Path) -> str:
        """``value`` (found at ``path``) as a message may quote it.

        Only the file's own text is quoted: a value that came from the environment is named by
        its variables instead (any variable may hold a secret), and a secret never shows.
        """
        if names := self.refs.get(path):
            return "the value from " + ", ".join(f"${{{name}}}" for name in names)
        return "a value containing a secret key" if self.is_secret(value) else repr(value)

    def is_secret(self, value: str) -> bool:
        return any(secret in value for secret in self.secrets)

    def config(self, schema: _ConfigSchema) -> Config:
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
                path: _Path = ("accounts", index, "name")
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

    def http(self, schema: _HttpSchema | None) -> HttpConfig:
        http = HttpConfig(**_given(schema))
        if http.ca_bundle is not None and not Path(http.ca_bundle).is_file():
            raise self.fail(("http", "ca_bundle"), f"no such file: {http.ca_bundle}")
        return http

    def account(
        self, index: int, raw: _AccountSchema, top_endpoints: dict[str, str], top_iam: str
    ) -> AccountConfig:
        path: _Path = ("accounts", index)
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

    def profile_credentials(self, raw: _AccountSchema, path: _Path) -> Credentials:
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

    def token(self, value: str, path: _Path) -> str:
        names = self.refs.get(path, ())
        origin = f" (it comes from {', '.join(f'${{{n}}}' for n in names)})" if names else ""
        if not value:
            raise self.fail(path, f"must not be empty{origin}")
        if not _TOKEN.fullmatch(value):
            raise self.fail(path, f"contains spaces, control or non-ASCII characters{origin}")
        if path[-1] in _SECRET_KEYS and not names:
            self.warnings.append(
                f"{_fmt(path)} is written in the config file in plain text; use ${{VAR}}"
            )
        return value

    def endpoints(self, raw: dict[str, object] | None, path: _Path) -> dict[str, str]:
        result: dict[str, str] = {}
        for region, url in (raw or {}).items():
            if not region.strip():
                raise self.fail(path, "a region name must not be empty")
            result[region] = self.url(url, (*path, region))
        return result

    def url(self, value: object, path: _Path) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected an http(s) URL, got {_words(value)}")
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

    def region(self, region: str, path: _Path, endpoints: Mapping[str, str]) -> None:
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
        self, regions: list[str], path: _Path, endpoints: Mapping[str, str]
    ) -> tuple[str, ...]:
        for index, region in enumerate(regions):
            if region in regions[:index]:
                shown = self.show(region, (*path, index))
                raise self.fail((*path, index), f"region {shown} is listed twice")
            self.region(region, (*path, index), endpoints)
        return tuple(regions)

    def projects(
        self, projects: list[_ProjectSchema], path: _Path, endpoints: Mapping[str, str]
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
                where = _fmt((*path, first[project.id], "id"))
                raise self.fail(id_path, f"project listed twice (also {where})")
            first[project.id] = index
            self.region(project.region, (*path, index, "region"), endpoints)
        return tuple(ProjectRef(id=p.id, region=p.region) for p in projects)

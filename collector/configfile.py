"""Reading a config document: its text, up to a shape-checked schema with variables expanded.

Everything about the document rather than its values: strict YAML, ``${VAR}`` expansion, the
msgspec schema and msgspec's errors reworded. It is apart from :mod:`collector.configload`, which
checks what the values mean and builds the :class:`~collector.config.Config`, so that each holds
one set of rules; the key paths and the message helpers both use are defined here.
:func:`read_document` does steps 1 to 3 of :mod:`collector.configload`'s four:

1. parse with PyYAML's safe loader (duplicate keys are errors, every failure has a position);
2. expand ``${VAR}`` and ``${VAR:-default}`` (``$${`` is a literal ``${``) in string *values*,
   after parsing, so an environment value can never change the document's structure;
3. validate the shape with msgspec (unknown keys are errors, ranges are declared on the schema).

It also notes which variables each value came from and every secret value, so that messages
built later can name a variable instead of quoting its value, and never quote a secret.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeAlias

import msgspec
import msgspec.inspect as mi
import yaml

from collector.compression import Compression
from collector.config import OffsetMode
from collector.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """A config document after steps 1 to 3: what :mod:`collector.configload` checks and builds."""

    schema: ConfigSchema
    #: The environment variables each expanded value came from, by key path.
    refs: Mapping[KeyPath, tuple[str, ...]]
    #: Every account's secret key and token, as expanded.
    secrets: frozenset[str]


def read_document(text: str, *, source: str, environ: Mapping[str, str]) -> Document:
    """Parse, expand and shape-check YAML ``text``; ``source`` names it in error messages."""
    try:
        data = _load_yaml(text, source)
        if data is None:
            raise error(source, "", "the file is empty; at least `accounts` is required")
        if not isinstance(data, dict):
            raise error(source, "", f"the top level must be a mapping, got {words(data)}")
        expander = _Expander(source=source, environ=environ)
        expanded = expander.expand(data, ())
        try:
            schema = msgspec.convert(expanded, ConfigSchema, strict=False)
        except msgspec.ValidationError as exc:
            raise _schema_error(source, exc) from exc
    except RecursionError:
        raise ConfigError(f"{source}: the document is nested too deeply") from None
    return Document(schema=schema, refs=expander.refs, secrets=_secret_values(expanded))


# --- Step 3's schema: the YAML's shape. None means "not given": the dataclass default. ---


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ProjectSchema(_Strict):
    id: str
    region: str


class AccountSchema(_Strict):
    name: str
    # Required unless `profile` names a section of a credentials file. UNSET (absent) is told
    # apart from null, which stays a type error like everywhere else.
    ak: str | msgspec.UnsetType = msgspec.UNSET
    sk: str | msgspec.UnsetType = msgspec.UNSET
    security_token: str | None = None
    profile: str | None = None
    credentials_file: str | None = None
    regions: list[str] | None = None
    projects: list[ProjectSchema] | None = None
    iam_endpoint: str | None = None
    # Values are checked by configload's _Builder.url, which can name the region in its message.
    endpoints: dict[str, object] | None = None


class _LimitsSchema(_Strict):
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    per_endpoint: Annotated[int, msgspec.Meta(ge=1)] | None = None
    rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    adaptive: bool | None = None


class HttpSchema(_Strict):
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


class ConfigSchema(_Strict):
    accounts: list[AccountSchema]
    iam_endpoint: str | None = None
    endpoints: dict[str, object] | None = None
    allow_insecure_http: bool | None = None
    limits: _LimitsSchema | None = None
    http: HttpSchema | None = None
    retry: _RetrySchema | None = None
    paging: _PagingSchema | None = None
    output: _OutputSchema | None = None


# --- Messages, and step 3's msgspec errors in our words ---

#: A key path: mapping keys and list indexes from the top of the document.
KeyPath: TypeAlias = tuple[str | int, ...]


def fmt(path: KeyPath) -> str:
    """``("accounts", 0, "sk")`` -> ``accounts[0].sk``."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out


def error(source: str, where: str, problem: str) -> ConfigError:
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


def words(value: object) -> str:
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
    where = fmt(path)
    if match["key"]:
        return error(source, where or "top level", "keys must be strings")
    if found := re.fullmatch(r"Object contains unknown field `(.*)`", what, re.DOTALL):
        valid = _field_names(path)
        close = difflib.get_close_matches(found[1], valid, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"valid keys: {', '.join(valid)}"
        return error(source, fmt((*path, found[1])), f"unknown key; {hint}")
    if found := re.fullmatch(r"Object missing required field `(.*)`", what, re.DOTALL):
        return error(source, fmt((*path, found[1])), "required key is missing")
    if what.startswith("Invalid enum value"):
        # msgspec quotes the bad value; name the choices instead (the value may be anything).
        choices = ", ".join(str(member.value) for member in OffsetMode)
        return error(source, where, f"must be one of {choices}")
    if found := _EXPECTED.fullmatch(what):
        got = f", got {_type_words(found['got'])}" if found["got"] else ""
        return error(source, where, f"expected {_type_words(found['want'])}{found['rest']}{got}")
    return error(source, where, what[:1].lower() + what[1:])


def _msgspec_path(text: str) -> KeyPath:
    """``.accounts[0].sk`` -> ``("accounts", 0, "sk")``."""
    return tuple(
        int(index) if index.isdigit() else key or f"[{index}]"
        for key, index in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", text)
    )


def _field_names(path: KeyPath) -> list[str]:
    """The keys the schema allows at ``path`` (a mapping), for "did you mean" hints."""
    node: mi.Type = mi.type_info(ConfigSchema)
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
        raise error(source, where, f"invalid YAML: {problem}") from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        where = f"line {line}, column {column}"
        raise error(source, where, f"invalid YAML: character U+{char:04X} is not allowed") from exc
    except yaml.YAMLError as exc:
        raise error(source, "", f"invalid YAML: {exc}") from exc


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
        self.refs: dict[KeyPath, tuple[str, ...]] = {}
        self._left = _MAX_VALUES
        self._open: set[int] = set()

    def expand(self, value: object, path: KeyPath) -> object:
        self._left -= 1
        if self._left < 0:
            raise error(self.source, "", f"more than {_MAX_VALUES} values (through aliases)")
        if isinstance(value, str):
            return self._string(value, path)
        if not isinstance(value, dict | list):
            return value
        if id(value) in self._open:
            raise error(self.source, fmt(path), "a YAML alias refers to a value containing it")
        self._open.add(id(value))
        try:
            if isinstance(value, dict):
                return {k: self.expand(v, (*path, str(k))) for k, v in value.items()}
            return [self.expand(v, (*path, i)) for i, v in enumerate(value)]
        finally:
            self._open.discard(id(value))

    def _string(self, text: str, path: KeyPath) -> str:
        names: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match[0] == "$${":
                return "${"
            name, default = match["name"], match["default"]
            if name is None:
                raise error(
                    self.source,
                    fmt(path),
                    "malformed reference: write ${NAME} or ${NAME:-default} "
                    "(and $${ for a literal ${)",
                )
            names.append(name)
            value = self.environ.get(name)
            if default is not None and not value:  # shell semantics: unset or empty
                return default
            if value is None:
                raise error(
                    self.source,
                    fmt(path),
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give it a default)",
                )
            return value

        result = _REFERENCE.sub(substitute, text)
        if names:
            self.refs[path] = tuple(names)
        return result


SECRET_KEYS: Final = frozenset({"sk", "security_token"})


def _secret_values(data: object) -> frozenset[str]:
    """Every account's secret key and token, as expanded."""
    found: set[str] = set()
    accounts = data.get("accounts") if isinstance(data, dict) else None
    for account in accounts if isinstance(accounts, list) else ():
        if isinstance(account, dict):
            found.update(v for k in SECRET_KEYS if isinstance(v := account.get(k), str) and v)
    return frozenset(found)

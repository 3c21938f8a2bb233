"""Loading the YAML configuration: every mistake is a ConfigError that says where, and no secret
ever shows in a message, a repr or the validate plan."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.auth import Credentials, Secret
from collector.config import (
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
from collector.configload import load_config, parse_config, with_overrides
from collector.errors import ConfigError
from collector.plan import render_plan

AK = "HPUAEXAMPLEACCESSKEY"
SK = "Zx9SecretKeyValue0123456789abcdefGHIJKLmn"
TOKEN = "gQpTokenValue.With+Base64/Chars=="
ENV = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
PROJECT = "0536cdee2200d5912f7cc00b877980f1"
EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"

ACCOUNT = """\
accounts:
  - name: prod
    ak: ${HUAWEICLOUD_SDK_AK}
    sk: ${HUAWEICLOUD_SDK_SK}
"""


def load(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(
        textwrap.dedent(text), source="cfg.yaml", environ=ENV if environ is None else environ
    )


def error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    return str(info.value)


# --- Valid configurations ---


def test_full_config_round_trips_into_the_model() -> None:
    """Every key of the contract lands in the field it names."""
    config = load(
        f"""\
        iam_endpoint: https://iam.example.com/
        endpoints:
          my-private-1: https://dws.private.example/
        allow_insecure_http: false
        accounts:
          - name: prod
            ak: ${{HUAWEICLOUD_SDK_AK}}
            sk: ${{HUAWEICLOUD_SDK_SK}}
            security_token: ${{TOKEN}}
            regions: [cn-north-4, my-private-1]
            projects:
              - {{id: {PROJECT}, region: eu-west-101}}
            iam_endpoint: https://iam.prod.example.com
            endpoints: {{cn-north-4: "http://127.0.0.1:8080"}}
          - name: dev
            ak: ${{HUAWEICLOUD_SDK_AK}}
            sk: ${{HUAWEICLOUD_SDK_SK}}
        limits: {{concurrency: 8}}
        http: {{connect_timeout: 2, read_timeout: 7.5}}
        retry: {{max_attempts: 3, backoff_base: 0.1, backoff_cap: 2, retry_after_max: 60}}
        paging: {{page_size: 50, offset_mode: record, max_pages: 20, max_rereads: 1}}
        output: {{dir: /var/lib/collector}}
        """,
        {**ENV, "TOKEN": TOKEN},
    )
    private = {"my-private-1": "https://dws.private.example"}
    assert config == Config(
        accounts=(
            AccountConfig(
                name="prod",
                credentials=Credentials(ak=AK, sk=Secret(SK), security_token=Secret(TOKEN)),
                regions=("cn-north-4", "my-private-1"),
                projects=(ProjectRef(id=PROJECT, region="eu-west-101"),),
                iam_endpoint="https://iam.prod.example.com",
                endpoints={**private, "cn-north-4": "http://127.0.0.1:8080"},
            ),
            AccountConfig(
                name="dev",
                credentials=Credentials(ak=AK, sk=Secret(SK)),
                iam_endpoint="https://iam.example.com",
                endpoints=private,
            ),
        ),
        limits=LimitsConfig(concurrency=8),
        http=HttpConfig(connect_timeout=2.0, read_timeout=7.5),
        retry=RetryConfig(max_attempts=3, backoff_base=0.1, backoff_cap=2.0, retry_after_max=60.0),
        paging=PagingConfig(
            page_size=50, offset_mode=OffsetMode.RECORD, max_pages=20, max_rereads=1
        ),
        output=OutputConfig(dir="/var/lib/collector"),
    )
    assert config.accounts[0].credentials.sk.reveal() == SK
    assert config.warnings == ()


def test_minimal_config_takes_every_default() -> None:
    """Only accounts is required; the rest are the dataclass defaults."""
    config = load(ACCOUNT)
    account = config.accounts[0]
    assert account.iam_endpoint == "https://iam.myhuaweicloud.com"
    assert (account.regions, account.projects, dict(account.endpoints)) == ((), (), {})
    assert account.credentials.security_token is None
    assert config == Config(accounts=(account,))


def test_empty_sections_mean_defaults() -> None:
    """A section whose keys are all commented out (YAML null) takes the defaults."""
    config = load(ACCOUNT + "limits:\nhttp:\nendpoints:\noutput:\n")
    assert config == load(ACCOUNT)


def test_account_endpoints_override_global_ones() -> None:
    """Account entries win over top-level ones region by region; the rest are inherited."""
    config = load(
        "endpoints:\n"
        "  cn-north-4: https://global.example/\n"
        "  cn-east-3: https://global-east.example\n" + ACCOUNT + "    endpoints:\n"
        "      cn-north-4: https://account.example\n"
    )
    assert dict(config.accounts[0].endpoints) == {
        "cn-north-4": "https://account.example",
        "cn-east-3": "https://global-east.example",
    }


def test_account_iam_endpoint_overrides_global_one() -> None:
    """iam_endpoint per account wins; accounts without one use the top level's."""
    config = load("""\
        iam_endpoint: https://iam.global.example
        accounts:
          - {name: a, ak: "${HUAWEICLOUD_SDK_AK}", sk: "${HUAWEICLOUD_SDK_SK}"}
          - name: b
            ak: ${HUAWEICLOUD_SDK_AK}
            sk: ${HUAWEICLOUD_SDK_SK}
            iam_endpoint: https://iam.b.example
        """)
    assert [a.iam_endpoint for a in config.accounts] == [
        "https://iam.global.example",
        "https://iam.b.example",
    ]


def test_env_expansion_defaults_and_escapes() -> None:
    """${VAR}, ${VAR:-default} (unset or empty), $${ escapes, and numbers from strings."""
    config = load(
        """\
        accounts:
          - name: ${TEAM}-${STAGE:-prod}-${EMPTY:-x}
            ak: ${HUAWEICLOUD_SDK_AK}
            sk: ${HUAWEICLOUD_SDK_SK}
        limits:
          concurrency: ${CONCURRENCY:-16}
        output:
          since_run: /data/$${HOME}/$HOME/$$/${DIR:-out}
        """,
        {**ENV, "TEAM": "dw", "EMPTY": ""},
    )
    assert config.accounts[0].name == "dw-prod-x"
    assert config.limits.concurrency == 16
    assert config.output.since_run == "/data/${HOME}/$HOME/$$/out"


def test_expansion_is_not_textual() -> None:
    """A variable's value stays one string: YAML syntax in it adds no keys."""
    config = load(
        ACCOUNT + "output: {since_run: '${DIR}'}\n", {**ENV, "DIR": "x\nlimits: {concurrency: 1}"}
    )
    assert config.output.since_run == "x\nlimits: {concurrency: 1}"
    assert config.limits.concurrency == 32


def test_yaml_anchors_and_merge_keys_work() -> None:
    """Shared account settings through an anchor and << merge key."""
    config = load("""\
        accounts:
          - &base {name: a, ak: "${HUAWEICLOUD_SDK_AK}", sk: "${HUAWEICLOUD_SDK_SK}"}
          - <<: *base
            name: b
        """)
    assert [a.name for a in config.accounts] == ["a", "b"]
    assert config.accounts[1].credentials == config.accounts[0].credentials


def test_empty_security_token_means_none() -> None:
    """${HUAWEICLOUD_SDK_SECURITY_TOKEN:-} unset gives no token, set gives a Secret."""
    text = ACCOUNT + "    security_token: ${HUAWEICLOUD_SDK_SECURITY_TOKEN:-}\n"
    assert load(text).accounts[0].credentials.security_token is None
    token = load(text, {**ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN}).accounts[0].credentials
    assert token.security_token == Secret(TOKEN)


def test_plain_text_secrets_load_with_a_warning() -> None:
    """sk and security_token written literally load, with one warning each."""
    config = load("""\
        accounts:
          - name: a
            ak: AKLITERAL
            sk: literal-secret
            security_token: literal-token
        """)
    assert config.accounts[0].credentials.sk == Secret("literal-secret")
    assert config.warnings == (
        "accounts[0].sk is written in the config file in plain text; use ${VAR}",
        "accounts[0].security_token is written in the config file in plain text; use ${VAR}",
    )


def test_loopback_http_is_allowed_and_insecure_http_can_be_opted_into() -> None:
    """http:// to 127.0.0.0/8, ::1 and localhost is fine; elsewhere only with the flag."""
    config = load(
        "endpoints:\n"
        "  a: http://127.0.0.9:1/\n"
        "  b: http://[::1]:8080\n"
        "  c: http://LOCALHOST\n"
        "iam_endpoint: http://localhost:9000\n" + ACCOUNT
    )
    assert dict(config.accounts[0].endpoints) == {
        "a": "http://127.0.0.9:1",
        "b": "http://[::1]:8080",
        "c": "http://LOCALHOST",
    }
    insecure = load(ACCOUNT + "allow_insecure_http: true\niam_endpoint: http://iam.lan\n")
    assert insecure.accounts[0].iam_endpoint == "http://iam.lan"


def test_override_makes_a_private_region_usable() -> None:
    """A region unknown to the SDK is accepted once it has an endpoint."""
    config = load(
        ACCOUNT + "    regions: [my-private-1]\n    endpoints: {my-private-1: https://x.example}\n"
    )
    assert config.accounts[0].regions == ("my-private-1",)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """load_config reads UTF-8 (with or without a byte-order mark) and names the file."""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ACCOUNT.encode())
    assert load_config(path, environ=ENV).accounts[0].name == "prod"
    path.write_text(ACCOUNT + "limits: {concurrency: 0}\n")
    with pytest.raises(ConfigError, match=f"^{path}: limits.concurrency: "):
        load_config(path, environ=ENV)


def test_example_config_loads_and_spells_out_the_defaults() -> None:
    """config.example.yaml is valid and every value in it is the default."""
    config = load_config(EXAMPLE, environ=ENV)
    assert config == Config(
        accounts=(AccountConfig(name="prod", credentials=Credentials(ak=AK, sk=Secret(SK))),)
    )


def test_with_overrides_replaces_and_checks() -> None:
    """Command-line overrides replace the file's values and are range-checked."""
    config = with_overrides(load(ACCOUNT), concurrency=4, output_dir="/tmp/out")
    assert (config.limits.concurrency, config.output.dir) == (4, "/tmp/out")
    assert with_overrides(config) == config
    with pytest.raises(ConfigError, match=r"^concurrency must be at least 1, got 0$"):
        with_overrides(config, concurrency=0)
    with pytest.raises(ConfigError, match=r"^the output directory must not be empty$"):
        with_overrides(config, output_dir=" ")


# --- Errors: one per case, each message compared in full ---


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing file says which path was tried."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    assert str(info.value) == f"config file not found: {path}"


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    """A directory, or bytes that are not UTF-8, is reported with the path."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ=ENV)
    assert str(info.value).startswith(f"cannot read config file {tmp_path}: ")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"accounts: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    assert str(info.value) == f"{path}: not UTF-8 text (bad byte at offset 13)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "accounts:\n  - name: a\n    ak: [x\n",
            "cfg.yaml: line 4, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at line 3, column 9)",
        ),
        (
            "limits:\n  concurrency: 1\n concurrency: 2\n",
            "cfg.yaml: line 3, column 2: invalid YAML: expected <block end>, but found"
            " '<block mapping start>' (while parsing a block mapping at line 1, column 1)",
        ),
        (
            "a: b: c\n",
            "cfg.yaml: line 1, column 5: invalid YAML: mapping values are not allowed here",
        ),
        (
            "a:\n\tb: 1\n",
            "cfg.yaml: line 2, column 1: invalid YAML: found character '\\t' that"
            " cannot start any token (while scanning for the next token)",
        ),
        (
            "limits: {}\nlimits: {}\n",
            "cfg.yaml: line 2, column 1: invalid YAML: duplicate key 'limits' (first at line 1)",
        ),
        (
            "a: 1\nb: 2023-13-45\n",
            "cfg.yaml: line 2, column 4: invalid YAML: invalid timestamp value"
            " (month must be in 1..12)",
        ),
        (
            "a: !!int x\n",
            "cfg.yaml: line 1, column 4: invalid YAML: invalid int value"
            " (invalid literal for int() with base 10: 'x')",
        ),
        ("a: 1\n\x00", "cfg.yaml: line 2, column 1: invalid YAML: character U+0000 is not allowed"),
        (
            "a: 1\n---\nb: 2\n",
            "cfg.yaml: line 2, column 1: invalid YAML: but found another document"
            " (expected a single document in the stream at line 1, column 1)",
        ),
    ],
)
def test_invalid_yaml_names_line_and_column(text: str, expected: str) -> None:
    """YAML errors give the 1-based line and column of the problem."""
    assert error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "cfg.yaml: the file is empty; at least `accounts` is required"),
        ("# only a comment\n", "cfg.yaml: the file is empty; at least `accounts` is required"),
        ("- accounts\n", "cfg.yaml: the top level must be a mapping, got a list"),
        ("accounts\n", "cfg.yaml: the top level must be a mapping, got a string"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, expected: str) -> None:
    """An empty file or a top level that is not a mapping is named as such."""
    assert error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ACCOUNT + "    regoins: [cn-north-4]\n",
            "accounts[0].regoins: unknown key; did you mean `regions`?",
        ),
        (ACCOUNT + "limts: {}\n", "limts: unknown key; did you mean `limits`?"),
        (
            ACCOUNT + "paging: {page_sise: 5}\n",
            "paging.page_sise: unknown key; did you mean `page_size`?",
        ),
        (
            ACCOUNT + "    projects: [{id: x, region: y, zone: z}]\n",
            "accounts[0].projects[0].zone: unknown key; valid keys: id, region",
        ),
        (
            ACCOUNT + "colour: blue\n",
            "colour: unknown key; valid keys: accounts, iam_endpoint, endpoints,"
            " allow_insecure_http, limits, http, retry, paging, output",
        ),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(text: str, expected: str) -> None:
    """An unknown key is named with its full path and the closest valid key."""
    assert error(text) == f"cfg.yaml: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits: {concurrency: many}", "limits.concurrency: expected an integer, got a string"),
        ("limits: {concurrency: 1.5}", "limits.concurrency: expected an integer, got a number"),
        (
            "limits: {concurrency: true}",
            "limits.concurrency: expected an integer, got a boolean (true/false)",
        ),
        ("limits: [1]", "limits: expected a mapping, got a list"),
        ("http: {read_timeout: soon}", "http.read_timeout: expected a number, got a string"),
        (
            "allow_insecure_http: maybe",
            "allow_insecure_http: expected a boolean (true/false), got a string",
        ),
        ("paging: {offset_mode: bytes}", "paging.offset_mode: must be one of auto, page, record"),
        ("output: {dir: 3}", "output.dir: expected a string, got an integer"),
        ("endpoints: [a]", "endpoints: expected a mapping, got a list"),
        (
            "endpoints: {cn-north-4: 5}",
            "endpoints.cn-north-4: expected an http(s) URL, got an integer",
        ),
        ("endpoints: {1: https://x}", "endpoints: keys must be strings"),
        ("1: x", "top level: keys must be strings"),
    ],
)
def test_wrong_type_names_path_and_expected_type(text: str, expected: str) -> None:
    """msgspec's `$.a.b` messages come out in our `a.b: expected ...` form."""
    assert error(ACCOUNT + text + "\n") == f"cfg.yaml: {expected}"


def test_wrong_type_inside_an_account() -> None:
    """Paths through lists carry the index."""
    text = (
        ACCOUNT + "  - name: b\n    ak: x\n    sk: ${HUAWEICLOUD_SDK_SK}\n    regions: cn-north-4\n"
    )
    assert error(text) == "cfg.yaml: accounts[1].regions: expected a list, got a string"
    assert error("accounts:\n  - name: 2024\n    ak: x\n    sk: y\n") == (
        "cfg.yaml: accounts[0].name: expected a string, got an integer"
    )
    assert error("accounts:\n  - name: a\n    ak:\n    sk: y\n") == (
        "cfg.yaml: accounts[0].ak: expected a string, got null (an empty value)"
    )


def test_unset_variable_names_variable_and_key() -> None:
    """An unset ${VAR} without default names the variable and where it is used."""
    assert error(ACCOUNT, {"HUAWEICLOUD_SDK_AK": AK}) == (
        "cfg.yaml: accounts[0].sk: environment variable HUAWEICLOUD_SDK_SK is not set"
        " (write ${HUAWEICLOUD_SDK_SK:-default} to give it a default)"
    )
    assert error(ACCOUNT + "    regions:\n      - ${REGION}\n") == (
        "cfg.yaml: accounts[0].regions[0]: environment variable REGION is not set"
        " (write ${REGION:-default} to give it a default)"
    )


@pytest.mark.parametrize("reference", ["${", "${}", "${1X}", "${X", "${X:default}", "${X:-${Y}}"])
def test_malformed_reference_is_an_error(reference: str) -> None:
    """A ${ that is not ${NAME} or ${NAME:-default} is an error, not literal text."""
    assert error(ACCOUNT + f"output: {{dir: '{reference}'}}\n") == (
        "cfg.yaml: output.dir: malformed reference: write ${NAME} or ${NAME:-default}"
        " (and $${ for a literal ${)"
    )


@pytest.mark.parametrize("key", ["name", "ak", "sk"])
def test_missing_required_account_key_is_named(key: str) -> None:
    """name, ak and sk are required, and the message gives the account's index."""
    second = {"name": "b", "ak": "x", "sk": "${HUAWEICLOUD_SDK_SK}"}
    del second[key]
    text = ACCOUNT + "  - " + "\n    ".join(f"{k}: {v}" for k, v in second.items()) + "\n"
    assert error(text) == f"cfg.yaml: accounts[1].{key}: required key is missing"


def test_missing_or_empty_accounts() -> None:
    """accounts is required and must hold at least one account."""
    assert error("limits: {}\n") == "cfg.yaml: accounts: required key is missing"
    assert error("accounts: []\n") == "cfg.yaml: accounts: at least one account is required"


def test_duplicate_account_names() -> None:
    """Two accounts with one name are an error naming both."""
    text = (
        ACCOUNT
        + "  - {name: dev, ak: x, sk: '${HUAWEICLOUD_SDK_SK}'}\n"
        + ACCOUNT.split("\n", 1)[1]
    )
    assert (
        error(text)
        == "cfg.yaml: accounts[2].name: duplicate account name 'prod' (also accounts[0].name)"
    )


def test_empty_credentials_after_expansion() -> None:
    """A variable that is set but empty leaves ak or sk empty: named, with the variable."""
    assert error(ACCOUNT, {**ENV, "HUAWEICLOUD_SDK_SK": ""}) == (
        "cfg.yaml: accounts[0].sk: must not be empty (it comes from ${HUAWEICLOUD_SDK_SK})"
    )
    assert error(ACCOUNT, {**ENV, "HUAWEICLOUD_SDK_AK": ""}) == (
        "cfg.yaml: accounts[0].ak: must not be empty (it comes from ${HUAWEICLOUD_SDK_AK})"
    )
    assert (
        error("accounts: [{name: a, ak: '', sk: x}]\n")
        == "cfg.yaml: accounts[0].ak: must not be empty"
    )
    assert (
        error("accounts: [{name: ' ', ak: a, sk: x}]\n")
        == "cfg.yaml: accounts[0].name: must not be empty"
    )


def test_credentials_with_whitespace_are_rejected() -> None:
    """A stray newline or space in a key would break the signature: caught, value unshown."""
    message = error(ACCOUNT, {**ENV, "HUAWEICLOUD_SDK_SK": SK + "\r"})
    assert message == (
        "cfg.yaml: accounts[0].sk: contains spaces, control or non-ASCII characters"
        " (it comes from ${HUAWEICLOUD_SDK_SK})"
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("limits: {concurrency: 0}", "limits.concurrency: expected an integer >= 1"),
        ("http: {connect_timeout: 0}", "http.connect_timeout: expected a number > 0.0"),
        ("http: {read_timeout: -1}", "http.read_timeout: expected a number > 0.0"),
        ("http: {read_timeout: .nan}", "http.read_timeout: expected a number > 0.0"),
        ("retry: {max_attempts: 0}", "retry.max_attempts: expected an integer >= 1"),
        ("retry: {backoff_base: -0.5}", "retry.backoff_base: expected a number >= 0.0"),
        ("retry: {retry_after_max: -1}", "retry.retry_after_max: expected a number >= 0.0"),
        (
            "retry: {backoff_base: 5, backoff_cap: 1}",
            "retry.backoff_cap: must not be less than retry.backoff_base",
        ),
        ("paging: {page_size: 0}", "paging.page_size: expected an integer >= 1"),
        ("paging: {max_pages: 0}", "paging.max_pages: expected an integer >= 1"),
        ("paging: {max_rereads: -1}", "paging.max_rereads: expected an integer >= 0"),
        ("output: {dir: ''}", "output.dir: must not be empty"),
    ],
)
def test_numbers_out_of_range(section: str, expected: str) -> None:
    """Each bound is checked and reported with its key."""
    assert error(ACCOUNT + section + "\n") == f"cfg.yaml: {expected}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://dws.example", "'ftp://dws.example' is not an http(s) URL"),
        ("dws.example.com", "'dws.example.com' is not an http(s) URL"),
        ("https://", "'https://' is not an http(s) URL"),
        ("https://dws.example:99999", "'https://dws.example:99999' is not an http(s) URL"),
        ("https://dws .example", "'https://dws .example' is not an http(s) URL"),
        ("https://user:pw@dws.example", "must not contain a user name or password"),
        ("https://dws.example/?a=1", "must not contain a query (?) or fragment (#)"),
        (
            "http://dws.example",
            "'http://dws.example' is plain http:// to a host that is not loopback (127.0.0.0/8,"
            " ::1, localhost); use https:// or set allow_insecure_http: true",
        ),
        (
            "http://128.0.0.1",
            "'http://128.0.0.1' is plain http:// to a host that is not loopback (127.0.0.0/8,"
            " ::1, localhost); use https:// or set allow_insecure_http: true",
        ),
    ],
)
def test_bad_endpoint_urls(url: str, expected: str) -> None:
    """Endpoints must be http(s) URLs, and plain http only to loopback."""
    assert (
        error(ACCOUNT + f"endpoints: {{cn-north-4: '{url}'}}\n")
        == f"cfg.yaml: endpoints.cn-north-4: {expected}"
    )
    account_level = error(ACCOUNT + f"    iam_endpoint: '{url}'\n")
    assert account_level == f"cfg.yaml: accounts[0].iam_endpoint: {expected}"


def test_bad_project_ids() -> None:
    """A project id is 32 lowercase hex characters, once per account."""
    rule = "is not a project id (32 lowercase hex characters)"
    short = error(ACCOUNT + "    projects: [{id: 0536cdee, region: cn-north-4}]\n")
    assert short == f"cfg.yaml: accounts[0].projects[0].id: '0536cdee' {rule}"
    upper = PROJECT.upper()
    assert error(ACCOUNT + f"    projects: [{{id: {upper}, region: cn-north-4}}]\n") == (
        f"cfg.yaml: accounts[0].projects[0].id: '{upper}' {rule}"
    )
    twice = (
        f"    projects:\n"
        f"      - {{id: {PROJECT}, region: cn-north-4}}\n"
        f"      - {{id: {PROJECT}, region: cn-east-3}}\n"
    )
    assert error(ACCOUNT + twice) == (
        "cfg.yaml: accounts[0].projects[1].id: project listed twice"
        " (also accounts[0].projects[0].id)"
    )


def test_region_without_endpoint_asks_for_an_override() -> None:
    """A region with no known endpoint, in regions or a project, says to add it under endpoints."""
    assert error(ACCOUNT + "    regions: [cn-north-4, cn-nrth-4]\n") == (
        "cfg.yaml: accounts[0].regions[1]: no DWS endpoint is known for region 'cn-nrth-4'"
        " (did you mean 'cn-north-4'?); if the region exists, add its URL under `endpoints`"
    )
    assert error(ACCOUNT + f"    projects: [{{id: {PROJECT}, region: zz}}]\n") == (
        "cfg.yaml: accounts[0].projects[0].region: no DWS endpoint is known for region 'zz';"
        " if the region exists, add its URL under `endpoints`"
    )
    assert error(ACCOUNT + "    regions: [cn-north-4, cn-north-4]\n") == (
        "cfg.yaml: accounts[0].regions[1]: region 'cn-north-4' is listed twice"
    )


def test_recursive_alias_and_alias_bombs_are_errors() -> None:
    """A value containing itself, or aliases multiplying past any real config, is refused."""
    assert error("a: &x [*x]\n") == "cfg.yaml: a[0]: a YAML alias refers to a value containing it"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdef":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]\n"
    assert error(bomb) == "cfg.yaml: more than 100000 values (through aliases)"


def test_deep_nesting_is_an_error() -> None:
    """Nesting deeper than Python can recurse is a ConfigError too."""
    assert (
        error("a: " + "[" * 5000 + "]" * 5000 + "\n")
        == "cfg.yaml: the document is nested too deeply"
    )


# --- Secrets never leak ---


def _bad_configs() -> list[tuple[str, dict[str, str]]]:
    secret_env = {**ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN}
    token = "    security_token: ${HUAWEICLOUD_SDK_SECURITY_TOKEN}\n"
    cases = [
        ACCOUNT + token + "limits: {concurrency: x}\n",
        ACCOUNT + token + "    regions:\n      - ${HUAWEICLOUD_SDK_SK}\n",
        ACCOUNT
        + token
        + "    projects:\n      - id: ${HUAWEICLOUD_SDK_SK}\n        region: cn-north-4\n",
        ACCOUNT + token + "endpoints:\n  a: ftp://${HUAWEICLOUD_SDK_SK}\n",
        ACCOUNT + token + "endpoints:\n  a: http://${HUAWEICLOUD_SDK_SECURITY_TOKEN}\n",
        ACCOUNT + token + "output: {dir: ''}\n",
        ACCOUNT + token + "    regions:\n      - ${HUAWEICLOUD_SDK_SK}-${NOPE}\n",
        ACCOUNT
        + token
        + ACCOUNT.split("\n", 1)[1].replace("name: prod", "name: ${HUAWEICLOUD_SDK_SK}") * 2,
        "accounts:\n  - name: a\n    ak: a\n    sk: " + SK + "\n    regions: [" + SK + "]\n",
        "accounts:\n  - name: a\n    ak: a\n    sk: "
        + SK
        + "\n"
        + "endpoints: {x: 'ftp://"
        + SK
        + "'}\n",
    ]
    return [(case, secret_env) for case in cases]


@pytest.mark.parametrize(("text", "environ"), _bad_configs())
def test_no_secret_in_error_messages(text: str, environ: dict[str, str]) -> None:
    """Whatever goes wrong, neither the secret key nor the token is in the message."""
    message = error(text, environ)
    assert SK not in message
    assert TOKEN not in message


def test_no_secret_in_repr_or_plan() -> None:
    """repr(config) and the validate plan show neither secret; the plan masks the AK."""
    text = ACCOUNT + "    security_token: ${T}\n    regions: [cn-north-4]\n"
    config = load(text, {**ENV, "T": TOKEN})
    plan = render_plan(config)
    for shown in (repr(config), str(config), plan):
        assert SK not in shown
        assert TOKEN not in shown
    assert AK not in plan
    assert "HPUA…" in plan
    assert "secret key:     ***" in plan
    assert "security token: set" in plan


def test_plan_says_what_will_be_discovered_where() -> None:
    """Explicit projects and regions come with their endpoints; otherwise all of IAM."""
    config = load(f"""\
        endpoints: {{my-private-1: https://dws.private.example}}
        accounts:
          - name: prod
            ak: ${{HUAWEICLOUD_SDK_AK}}
            sk: ${{HUAWEICLOUD_SDK_SK}}
            regions: [my-private-1]
            projects: [{{id: {PROJECT}, region: eu-west-101}}]
          - name: all
            ak: ${{HUAWEICLOUD_SDK_AK}}
            sk: ${{HUAWEICLOUD_SDK_SK}}
        """)
    plan = render_plan(config)
    assert f"    {PROJECT}  eu-west-101  https://dws.eu-west-101.myhuaweicloud.eu\n" in plan
    assert "    my-private-1  https://dws.private.example\n" in plan
    assert "every project IAM lists" in plan.split("Account all")[1]
    assert "every project IAM lists" not in plan.split("Account all")[0]
    assert "IAM endpoint:   https://iam.myhuaweicloud.com" in plan
    assert "Concurrency: 32 requests in flight" in plan
    assert "Output:      ./exports" in plan


# --- Properties ---

KEYS = st.sampled_from(
    [
        "accounts",
        "name",
        "ak",
        "sk",
        "security_token",
        "regions",
        "projects",
        "id",
        "region",
        "iam_endpoint",
        "endpoints",
        "allow_insecure_http",
        "limits",
        "concurrency",
        "http",
        "connect_timeout",
        "read_timeout",
        "retry",
        "max_attempts",
        "backoff_base",
        "backoff_cap",
        "retry_after_max",
        "paging",
        "page_size",
        "offset_mode",
        "max_pages",
        "max_rereads",
        "output",
        "dir",
        "cn-north-4",
    ]
) | st.text(max_size=6)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    | st.sampled_from(
        [
            "${HUAWEICLOUD_SDK_AK}",
            "${UNSET}",
            "${UNSET:-7}",
            "$${",
            "${",
            "auto",
            "https://dws.example",
            "http://10.0.0.1",
            "http://127.0.0.1:1",
            "cn-north-4",
            PROJECT,
        ]
    )
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)


#: Documents shaped like a config, so that the later checks are reached too.
ACCOUNT_SHAPED = st.fixed_dictionaries(
    {"name": SCALARS, "ak": SCALARS, "sk": SCALARS},
    optional={
        "security_token": SCALARS,
        "regions": DATA,
        "projects": st.lists(st.fixed_dictionaries({"id": SCALARS, "region": SCALARS})),
        "iam_endpoint": SCALARS,
        "endpoints": st.dictionaries(KEYS, SCALARS),
    },
)
CONFIG_SHAPED = st.fixed_dictionaries(
    {"accounts": st.lists(ACCOUNT_SHAPED, max_size=3)},
    optional=dict.fromkeys(
        ["iam_endpoint", "endpoints", "allow_insecure_http", "limits", "http", "retry", "paging"],
        DATA,
    ),
)


def _visible(text: str, environ: dict[str, str]) -> str:
    """All a user could see: the ConfigError's message, or the config's repr and plan.

    Anything but a ConfigError propagates and fails the test.
    """
    try:
        config = parse_config(text, source="fuzz.yaml", environ=environ)
    except ConfigError as exc:
        return str(exc)
    return repr(config) + render_plan(config)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, DATA, max_size=6) | DATA | CONFIG_SHAPED)
def test_any_yaml_data_gives_a_config_or_a_config_error(data: object) -> None:
    """Arbitrary nested data dumped to YAML never raises anything but ConfigError."""
    assert SK not in _visible(yaml.safe_dump(data, allow_unicode=True), ENV)


#: Pieces of YAML syntax, variable references and troublemakers, to glue into documents.
YAML_BITS = [*"ab:-[]{}&*!|>'\"#%@`,?\n\t $0", "${X}", "${HUAWEICLOUD_SDK_AK}", "$${", "\x00", "é"]
YAML_BITS += ["accounts", "name", "ak", "sk", "limits", "concurrency", "!!int ", "<<", "---\n"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(YAML_BITS), max_size=40).map("".join))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    """Arbitrary YAML-ish text never raises anything but ConfigError."""
    assert SK not in _visible(text, ENV)


@settings(max_examples=100)
@given(
    secret=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40
    ).filter(lambda secret: secret not in AK),
    tail=st.sampled_from(
        [
            "limits: {concurrency: x}\n",
            # The secret misused where values are echoed; "zz-" keeps it from being valid.
            "    regions:\n      - zz-${HUAWEICLOUD_SDK_SK}\n",
            "endpoints:\n  a: ftp://${HUAWEICLOUD_SDK_SK}\n",
            "output: {dir: ''}\n",
            "\n",
        ]
    ),
)
def test_any_secret_stays_out_of_messages_and_repr(secret: str, tail: str) -> None:
    """For any secret key value, no message and no repr contains it."""
    environ = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": secret}
    assert secret not in _visible(ACCOUNT + tail, environ)


def _credentials_file(tmp_path: Path, mode: int, body: str) -> Path:
    file = tmp_path / "credentials"
    file.write_text(body, encoding="utf-8")
    file.chmod(mode)
    return file


def test_profile_reads_the_sdk_credentials_file(tmp_path: Path) -> None:
    """profile: a section of the SDK's INI credentials file (path from the environment)."""
    file = _credentials_file(
        tmp_path,
        0o600,
        "[basic]\nak = AKFILE\nsk = SKFILE-secret\n[temp]\nak = A2\nsk = S2\nsecurity_token = T2\n",
    )
    env = {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(file)}
    config = parse_config(
        "accounts:\n  - {name: a, profile: basic}\n  - {name: b, profile: temp}\n",
        source="cfg.yaml",
        environ=env,
    )
    first, second = (a.credentials for a in config.accounts)
    assert (first.ak, first.sk.reveal(), first.security_token) == ("AKFILE", "SKFILE-secret", None)
    assert second.security_token is not None
    assert second.security_token.reveal() == "T2"
    assert "SKFILE-secret" not in repr(config)


def test_credentials_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A credentials file with group/other permissions is an error telling how to fix it."""
    file = _credentials_file(tmp_path, 0o644, "[basic]\nak = A\nsk = SKSECRET\n")
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"accounts:\n  - {{name: a, credentials_file: '{file}'}}\n",
            source="cfg.yaml",
            environ={},
        )
    assert str(info.value) == (
        f"cfg.yaml: accounts[0]: credentials file {file} is readable by others (mode 644);"
        f" run: chmod 600 {file}"
    )
    assert "SKSECRET" not in str(info.value)


def test_credentials_file_without_the_profile_names_the_section(tmp_path: Path) -> None:
    """A missing [section] is named; ak/sk together with a profile is refused."""
    file = _credentials_file(tmp_path, 0o600, "[basic]\nak = A\nsk = S\n")
    with pytest.raises(ConfigError, match=r"has no \[prod\] section"):
        parse_config(
            f"accounts:\n  - {{name: a, profile: prod, credentials_file: '{file}'}}\n",
            source="cfg.yaml",
            environ={},
        )
    with pytest.raises(ConfigError, match="not both"):
        parse_config(
            f"accounts:\n  - {{name: a, ak: x, sk: y, credentials_file: '{file}'}}\n",
            source="cfg.yaml",
            environ={},
        )

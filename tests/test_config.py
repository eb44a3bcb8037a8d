"""Config loading: every invalid file gives its exact message; valid files give the right plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.app import Daemon
from vigie.monitor.config import json_schema, load_config
from vigie.monitor.health.topology import AnyOf
from vigie.probes import default_registry
from vigie.probes.http import make_session

HERE = Path(__file__).parent
ROOT = HERE.parent
INVALID = sorted((HERE / "config").glob("invalid-*.yaml"))


def expected_messages(path: Path) -> list[str]:
    """Return the `# expect:` lines at the top of an invalid config.

    `{kinds}` stands for the registered probe kinds, so a new kind needs no edit here.
    """
    kinds = ", ".join(default_registry().kinds())
    lines = path.read_text().splitlines()
    return [
        line.removeprefix("# expect: ").replace("{kinds}", kinds)
        for line in lines
        if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_gives_exact_message(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each invalid config fails with exactly the messages it declares, file:line:col first."""
    monkeypatch.chdir(path.parent)
    expected = expected_messages(path)
    assert expected, f"{path.name} declares no expected message"
    with pytest.raises(ConfigErrors) as info:
        load_config(path.name, default_registry(), env={})
    assert [str(e) for e in info.value.errors] == expected


def test_required_invalid_cases_exist() -> None:
    """The invalid configs cover every case the issue lists."""
    names = {p.stem.removeprefix("invalid-") for p in INVALID}
    required = {
        "bad-yaml",
        "unknown-key",
        "unknown-kind",
        "negative-interval",
        "timeout-longer-than-interval",
        "duplicate-id",
        "missing-secret-file",
        "undefined-env",
        "bad-url",
        "bad-port",
        "defaults-interval-not-a-duration",
        "unknown-profile",
        "every-stage-reported",
        "need-larger-than-group",
        "site-parent-cycle",
        "web-yml-missing",
        "web-yml-bad-hash",
        "missing-community-file",
    }
    assert required <= names


def test_example_config_plans_checks_with_defaults_modules_and_overrides() -> None:
    """The shipped example loads with nothing set; modules, defaults and overrides combine."""
    loaded = load_config(ROOT / "config" / "vigie.example.yaml", default_registry(), env={})
    assert not [w for w in loaded.warnings if "feeds no" in w.message or "no checks" in w.message]
    plan = loaded.plan
    assert loaded.checks_by_kind() == {"fhir": 1, "http": 4, "smtp": 2, "snmp": 2, "tcp": 1}
    assert loaded.sites() == {"bellevue": 2, "nord-salle-1": 8}
    labo = plan["labo-api"]
    assert labo.interval == 15.0
    assert labo.timeout == 5.0  # from the module
    assert dict(labo.labels) == {"site": "nord-salle-1", "component": "resultats-labo"}
    dpi = plan["dpi-web"]
    assert dpi.timeout == 5.0 and dpi.interval == 30.0
    settings = dpi.settings.model_dump()
    assert settings["valid_status_codes"] == [200]  # from the module
    assert str(settings["tls"]["ca_file"]) == "/etc/vigie/ca/chu-root.pem"  # from the check
    rdv = plan["rdv-web"]
    assert dict(rdv.labels)["site"] == "bellevue"
    assert plan["pacs-dicom"].host == "pacs.chu.local"


def test_example_config_shows_a_small_topology() -> None:
    """The example has sites with a parent, dependencies, A/B power and a redundancy group."""
    config = load_config(ROOT / "config" / "vigie.example.yaml", default_registry(), env={}).config
    assert {s.id: s.parent for s in config.sites}["nord-salle-1"] == "nord"
    comps = {c.id: c for c in config.components}
    assert comps["resultats-labo"].depends_on == ["dossier-patient"]
    feeds = comps["dossier-patient"].powered_by[0]
    assert isinstance(feeds, AnyOf) and feeds.any_of == ["ups-a", "ups-b"]
    group = comps["messagerie"].depends_on[0]
    assert isinstance(group, AnyOf) and (group.any_of, group.need) == (
        ["relais-smtp-1", "relais-smtp-2"],
        1,
    )


def test_secret_from_env_is_never_printed(tmp_path: Path) -> None:
    """A secret substituted from the environment stays hidden in repr, str and dumps."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n  - id: rdv-web\n    kind: http\n    target: https://rdv.chu.local/\n"
        "    http: {basic_auth: {username: vigie, password: '${VIGIE_RDV_PASSWORD}'}}\n"
    )
    loaded = load_config(config, default_registry(), env={"VIGIE_RDV_PASSWORD": "s3cret-rdv"})
    settings = loaded.plan["rdv-web"].settings
    assert "s3cret-rdv" not in repr(settings)
    assert "s3cret-rdv" not in str(settings)
    assert "s3cret-rdv" not in json.dumps(settings.model_dump(mode="json"))
    auth = settings.model_dump()["basic_auth"]
    assert auth["password"].get_secret_value() == "s3cret-rdv"


def test_secret_file_is_read_at_load(tmp_path: Path) -> None:
    """A `*_file` secret is read from its file, trailing newline stripped."""
    secret = tmp_path / "token"
    secret.write_text("tok-123\n")
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n  - id: a\n    kind: http\n    target: http://127.0.0.1:1/\n"
        f"    http: {{bearer_token_file: {secret}}}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    token = loaded.plan["a"].settings.model_dump()["bearer_token"]
    assert token.get_secret_value() == "tok-123"


def test_dollar_dollar_escapes_a_literal_dollar(tmp_path: Path) -> None:
    """`$$` in a string gives a literal `$`, not a variable reference."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n  - id: a\n    kind: tcp\n    target: 127.0.0.1:25\n"
        "    tcp: {query_response: [{expect: 'cost $$5'}]}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    steps = loaded.plan["a"].settings.model_dump()["query_response"]
    assert steps[0]["expect"] == "cost $5"


def test_empty_config_is_valid_with_no_checks(tmp_path: Path) -> None:
    """An empty file is a valid config with no checks."""
    config = tmp_path / "vigie.yaml"
    config.write_text("")
    assert load_config(config, default_registry(), env={}).plan == {}


def test_schema_file_is_up_to_date() -> None:
    """config/schema.json matches `vigie schema`; regenerate with `make schema`."""
    committed = json.loads((ROOT / "config" / "schema.json").read_text())
    assert committed == json_schema(default_registry())


def test_schema_knows_every_kind() -> None:
    """The schema's checks are a union with one member per registered kind."""
    schema = json_schema(default_registry())
    text = json.dumps(schema)
    for kind in default_registry().kinds():
        assert f'"const": "{kind}"' in text


def test_relative_secret_file_is_taken_from_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative `*_file` path is resolved against the config file's directory, not the cwd."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("rel-tok\n")
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n  - id: a\n    kind: http\n    target: http://127.0.0.1:1/\n"
        "    http: {bearer_token_file: secrets/token}\n"
    )
    monkeypatch.chdir("/")
    loaded = load_config(config, default_registry(), env={})
    token = loaded.plan["a"].settings.model_dump()["bearer_token"]
    assert token.get_secret_value() == "rel-tok"


def test_secret_file_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    """A secret file other users can read loads, with a warning naming the field and the file."""
    (tmp_path / "token").write_text("tok-123\n")
    (tmp_path / "token").chmod(0o644)
    (tmp_path / "community").write_text("c0mmunity\n")
    (tmp_path / "community").chmod(0o640)
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "snmp:\n  auths:\n    ups: {version: 2, community_file: community}\n"
        "checks:\n  - id: a\n    kind: http\n    target: http://127.0.0.1:1/\n"
        "    http: {bearer_token_file: token}\n"
        "  - {id: b, kind: snmp, target: 127.0.0.1, snmp: {auth: ups}}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    assert [str(w) for w in loaded.warnings] == [
        f"{config}:8:12: checks[0].http.bearer_token_file: secret file "
        f"'{tmp_path / 'token'}' can be read by other users (mode 0644): "
        "make it root:vigie 0640 (chmod o-rwx)"
    ]
    assert "tok-123" not in str(loaded.warnings)


async def test_reload_reports_every_error(tmp_path: Path) -> None:
    """A refused reload returns every error of the file, as `vigie check` prints them."""
    config = tmp_path / "vigie.yaml"
    config.write_text("checks:\n  - {id: a, kind: tcp, target: '127.0.0.1:9'}\n")
    registry = default_registry()
    loaded = load_config(config, registry, env={})
    bad = HERE / "config" / "invalid-every-stage-reported.yaml"
    async with make_session() as session:
        daemon = Daemon(loaded, registry, session, env={})
        config.write_text(bad.read_text())
        errors = await daemon.reload()
    expected = [m.replace(bad.name, str(config), 1) for m in expected_messages(bad)]
    assert errors == expected
    assert len(errors) == 5
    assert daemon.loaded.plan is loaded.plan  # the old config stays in use

"""The `alerting:` config block: defaults, durations, secrets from files, refused mistakes."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from pydantic import ValidationError

from vigie.monitor.alerting import build_sinks
from vigie.monitor.alerting.settings import AlertingSettings, SmtpSettings

DOC = Path(__file__).parents[2] / "docs" / "alerting.md"
TOKEN = "hook-token-7c1d"
PASSWORD = "smtp-pw-91ab"


def doc_example() -> Any:
    """Return the YAML example of docs/alerting.md's configuration section, parsed."""
    text = DOC.read_text()
    match = re.search(r"## Configuration.*?```yaml\n(.*?)```", text, re.S)
    assert match, "docs/alerting.md has no yaml example under '## Configuration'"
    return yaml.safe_load(match.group(1))["alerting"]


def load(data: Any, config_dir: Path) -> AlertingSettings:
    """Validate an alerting block as the config loader does (paths from the config's folder)."""
    return AlertingSettings.model_validate(data, context={"config_dir": config_dir})


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """The secret files the documented example names, next to the config."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "hook-token").write_text(TOKEN + "\n")
    (folder / "smtp-password").write_text(PASSWORD + "\n")
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def test_documented_example_is_valid(secrets: Path) -> None:
    """The example in docs/alerting.md loads, durations parsed and secrets read from files."""
    settings = load(doc_example(), secrets)
    assert settings.resend_interval == 60.0
    assert settings.backoff_max == 300.0
    assert len(settings.alertmanagers) == 2
    assert settings.webhooks[0].bearer_token is not None
    assert settings.webhooks[0].bearer_token.get_secret_value() == TOKEN
    assert settings.smtp is not None and settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == PASSWORD
    assert settings.smtp.from_ == "vigie@hopital.example.org"
    assert [s.name for s in build_sinks(settings)] == [
        "alertmanager:http://am1.example.org:9093",
        "alertmanager:http://am2.example.org:9093",
        "webhook:pager",
        "smtp:smtp.hopital.example.org:587",
    ]


def test_secrets_never_printed(secrets: Path) -> None:
    """Neither repr, str nor a JSON dump of the settings shows a secret."""
    settings = load(doc_example(), secrets)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert TOKEN not in text
        assert PASSWORD not in text


def test_defaults() -> None:
    """An empty block turns alerting off, with the documented defaults."""
    settings = AlertingSettings()
    assert not settings.enabled
    assert settings.resend_interval == 60.0
    assert settings.watchdog is True
    assert settings.vigie_instance == socket.gethostname()
    assert (settings.backoff_initial, settings.backoff_max) == (1.0, 60.0)


def test_dump_validates_again(secrets: Path) -> None:
    """A dump (secrets revealed) validates to equal settings: the file fields were cleared."""
    settings = load(doc_example(), secrets)
    data = settings.model_dump(by_alias=True)
    data["webhooks"][0]["bearer_token"] = TOKEN
    assert data["smtp"]["password_file"] is None
    data["smtp"]["password"] = PASSWORD
    assert load(data, secrets) == settings


SMTP = {"host": "mail", "from": "v@example.org", "to": ["ops@example.org"]}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"alertmanagers": ["ftp://am:9093"]}, "must be an http:// or https:// URL"),
        ({"alertmanagers": ["http://user:pw@am:9093"]}, "credentials in the URL"),
        ({"alertmanagers": ["http://am:9093", "http://am:9093/"]}, "listed twice"),
        ({"alertmanagers": ["http://am:9093?x=1"]}, "takes no query"),
        ({"resend_interval": "0s"}, "greater than 0"),
        ({"backoff_initial": "2m", "backoff_max": "1m"}, "backoff_initial is larger"),
        ({"webhooks": [{"url": "http://h:1/a"}, {"url": "http://h:1/b"}]}, "give each a"),
        (
            {"webhooks": [{"url": "http://h/", "bearer_token": "a", "bearer_token_file": "f"}]},
            "either bearer_token or bearer_token_file",
        ),
        (
            {"webhooks": [{"url": "http://h/", "bearer_token_file": "/nonexistent/t"}]},
            "cannot read secret file",
        ),
        ({"smtp": {**SMTP, "username": "u"}}, "set both username and password"),
        (
            {"smtp": {**SMTP, "username": "u", "password": "p", "starttls": False}},
            "AUTH without STARTTLS",
        ),
        ({"smtp": {**SMTP, "to": []}}, "at least 1 item"),
        ({"smtp": {**SMTP, "to": ["nobody"]}}, "not an e-mail address"),
        ({"smtp": {**SMTP, "port": 0}}, "greater than or equal to 1"),
        ({"smtp": {**SMTP, "ca_file": "/nonexistent/ca.pem"}}, "cannot use ca_file"),
        ({"alertmanager": ["http://am:9093"]}, "Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_refused(data: dict[str, Any], error: str, tmp_path: Path) -> None:
    """Each mistake gives an error saying what is wrong."""
    with pytest.raises(ValidationError, match=re.escape(error)):
        load(data, tmp_path)


def test_secret_not_in_error(tmp_path: Path) -> None:
    """An error about an SMTP block does not echo its password."""
    with pytest.raises(ValidationError) as info:
        load({"smtp": {**SMTP, "password": PASSWORD, "starttls": False}}, tmp_path)
    assert PASSWORD not in str(info.value)


def test_relative_secret_file(tmp_path: Path) -> None:
    """A relative password_file is read from the config file's folder."""
    (tmp_path / "pw").write_text("relative-pw\n")
    smtp = SmtpSettings.model_validate(
        {**SMTP, "username": "u", "password_file": "pw"}, context={"config_dir": tmp_path}
    )
    assert smtp.password is not None
    assert smtp.password.get_secret_value() == "relative-pw"

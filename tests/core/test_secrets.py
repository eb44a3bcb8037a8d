"""Secrets from files: read once, bounded, never printed; paths taken from the config's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from vigie.core.secrets import (
    MAX_SECRET_BYTES,
    ConfigPath,
    read_secret_file,
    resolve_secret,
    resolve_secret_field,
)


def test_read_secret_file_strips_the_newline_and_hides_the_value(tmp_path: Path) -> None:
    """The trailing newline an editor adds is not part of the password."""
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    secret = read_secret_file(path)
    assert secret.get_secret_value() == "s3cret" and "s3cret" not in repr(secret)


def test_unreadable_or_huge_secret_files_say_why(tmp_path: Path) -> None:
    """A missing file and a file too large for a secret are named, the content never."""
    with pytest.raises(ValueError, match="cannot read secret file"):
        read_secret_file(tmp_path / "absent")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(ValueError, match="larger than"):
        read_secret_file(big)


def test_resolve_secret_takes_one_source_and_names_the_field(tmp_path: Path) -> None:
    """Inline or from a file, never both; a file error names `<name>_file`."""
    path = tmp_path / "pw"
    path.write_text("from-file")
    assert resolve_secret(None, path, "password") == SecretStr("from-file")
    assert resolve_secret(SecretStr("inline"), None, "password") == SecretStr("inline")
    assert resolve_secret(None, None, "password") is None
    with pytest.raises(ValueError, match="either password or password_file"):
        resolve_secret(SecretStr("a"), path, "password")
    with pytest.raises(ValueError, match=r"^password_file: cannot read"):
        resolve_secret(None, tmp_path / "absent", "password")


def test_config_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    """As Prometheus does: a relative path in a config is read beside that config."""

    class Model(BaseModel):
        path: ConfigPath

    relative = Model.model_validate({"path": "certs/ca.pem"}, context={"config_dir": tmp_path})
    assert relative.path == tmp_path / "certs/ca.pem"
    absolute = Model.model_validate({"path": "/etc/ca.pem"}, context={"config_dir": tmp_path})
    assert absolute.path == Path("/etc/ca.pem")


class Login(BaseModel):
    """A frozen settings model with a secret given inline or in a file, as the probes have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = "vigie"
    password: SecretStr | None = None
    password_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        resolve_secret_field(self, "password")
        return self


def test_a_secret_file_is_read_into_the_frozen_model_once(tmp_path: Path) -> None:
    """The file's secret lands in `password`; a dump validates again without the file."""
    path = tmp_path / "pw"
    path.write_text("from-file\n")
    login = Login.model_validate({"password_file": str(path)})
    assert login.password == SecretStr("from-file") and login.password_file is None
    path.unlink()  # the dump carries the secret, not the file: no second read
    dumped = login.model_dump(exclude_unset=True)
    assert dumped == {"password": SecretStr("from-file")}
    assert Login.model_validate(dumped) == login


def test_resolve_secret_field_keeps_inline_and_absent_secrets() -> None:
    """Inline stays as given, absent stays absent and unset."""
    assert Login(password=SecretStr("inline")).password == SecretStr("inline")
    empty = Login()
    assert empty.password is None and empty.model_dump(exclude_unset=True) == {}


def test_resolve_secret_field_errors_name_the_field(tmp_path: Path) -> None:
    """Both sources, or an unreadable file, fail validation naming the field, never the value."""
    path = tmp_path / "pw"
    path.write_text("x")
    with pytest.raises(ValidationError, match="either password or password_file"):
        Login.model_validate({"password": "hunter2", "password_file": str(path)})
    with pytest.raises(ValidationError, match="password_file: cannot read") as caught:
        Login.model_validate({"password_file": str(tmp_path / "absent")})
    assert "hunter2" not in str(caught.value)


def test_resolve_secret_field_refuses_a_field_that_is_not_a_secret() -> None:
    """A programming mistake (a plain field) is a TypeError, not a silent pass."""

    class Wrong(BaseModel):
        user: str = "x"
        user_file: Path | None = None

    with pytest.raises(TypeError, match="not a secret field"):
        resolve_secret_field(Wrong(), "user")

"""Secrets from files: read once, bounded, never printed; paths taken from the config's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from vigie.core.secrets import MAX_SECRET_BYTES, ConfigPath, read_secret_file, resolve_secret


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

"""Secrets from files: read once at load, kept as SecretStr so they are never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr, ValidationInfo

MAX_SECRET_BYTES = 64 * 1024


def read_secret_file(path: Path) -> SecretStr:
    """Return the content of a secret file (trailing newline stripped) or raise ValueError."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"secret file {str(path)!r} is larger than {MAX_SECRET_BYTES} bytes")
    return SecretStr(data.decode("utf-8", errors="replace").rstrip("\r\n"))


def resolve_secret(inline: SecretStr | None, file: Path | None, name: str) -> SecretStr | None:
    """Return the secret given inline or in `<name>_file`; both at once is an error."""
    if inline is not None and file is not None:
        raise ValueError(f"set either {name} or {name}_file, not both")
    if file is not None:
        try:
            return read_secret_file(file)
        except ValueError as exc:  # name the field: the config loader points at its line
            raise ValueError(f"{name}_file: {exc}") from None
    return inline


def _against_config_dir(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's directory, as Prometheus does."""
    base = (info.context or {}).get("config_dir")
    if path.is_absolute() or base is None:
        return path
    return Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_against_config_dir)]
"""A file path in the config: relative paths are taken from the config file's directory."""

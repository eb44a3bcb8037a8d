"""Secrets from files: read once at load, kept as SecretStr so they are never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, SecretStr, ValidationInfo

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


def resolve_secret_field(model: BaseModel, name: str) -> SecretStr | None:
    """Read `name` or `<name>_file` into `name` of a frozen model (from its after-validator).

    The file field is cleared and the fields set updated, so a dump of the settings is valid
    input for the same model and the file is not read again. Return the secret, if any.
    """
    inline, file = getattr(model, name), getattr(model, f"{name}_file")
    if not (inline is None or isinstance(inline, SecretStr)) or not (
        file is None or isinstance(file, Path)
    ):
        raise TypeError(f"{type(model).__name__}.{name} is not a secret field with a _file twin")
    value = resolve_secret(inline, file, name)
    object.__setattr__(model, name, value)
    object.__setattr__(model, f"{name}_file", None)
    fields_set = model.__pydantic_fields_set__
    fields_set.discard(f"{name}_file")
    if value is not None:
        fields_set.add(name)
    return value


def _against_config_dir(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's directory, as Prometheus does."""
    base = (info.context or {}).get("config_dir")
    if path.is_absolute() or base is None:
        return path
    return Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_against_config_dir)]
"""A file path in the config: relative paths are taken from the config file's directory."""

"""SNMP credentials: what fits each version and level, secrets from files, keys derived once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.snmp_peers import v3_auth
from vigie.probes.snmp import SnmpAuth, SnmpProbe

AUTH_ERRORS = [
    ({"version": 2}, "version 2 needs community or community_file"),
    ({"version": 2, "community": "c", "username": "u"}, "username is only for version 3"),
    ({"version": 3, "community": "c", "username": "u"}, "community is only for versions 1 and 2"),
    ({"version": 3}, "version 3 needs username"),
    (
        {"version": 3, "username": "u", "security_level": "authPriv", "auth_password": "12345678"},
        "security_level authPriv needs priv_password",
    ),
    (
        {"version": 3, "username": "u", "auth_password": "short"},
        "auth_password must be at least 8 characters",
    ),
    (
        {
            "version": 3,
            "username": "u",
            "security_level": "noAuthNoPriv",
            "auth_password": "12345678",
        },
        "auth_password is set but security_level is noAuthNoPriv",
    ),
    ({"version": 3, "username": "u", "auth_protocol": "SHA1"}, "auth_protocol"),
    (
        {"version": 2, "community": "c", "context_name": "vlan-10"},
        "context_name is only for version 3",
    ),
    ({"version": 2, "community": "c", "community_file": "/x"}, "set either community or"),
]


@pytest.mark.parametrize(("raw", "message"), AUTH_ERRORS)
def test_auth_validation(raw: dict[str, Any], message: str) -> None:
    """Each inconsistent auth gives its reason."""
    with pytest.raises(ValidationError, match=message):
        SnmpAuth.model_validate(raw)


def test_auth_level_defaults_from_passwords() -> None:
    """Without security_level, the passwords given choose it."""
    assert SnmpAuth.model_validate(v3_auth("noauth")).security_level == "noAuthNoPriv"
    assert SnmpAuth.model_validate(v3_auth("md5")).security_level == "authNoPriv"
    assert SnmpAuth.model_validate(v3_auth("sha_aes")).security_level == "authPriv"


def test_v3_keys_are_derived_once_per_auth(probe: SnmpProbe) -> None:
    """Password-to-key (a megabyte of hashing per password) runs once per auth, not per poll."""
    auth = SnmpAuth.model_validate(v3_auth("sha_aes"))
    user = probe.user_of(auth)
    assert user is not None and user.get_auth_key() != b""
    assert probe.user_of(SnmpAuth.model_validate(v3_auth("sha_aes"))) is user  # equal auths
    other = SnmpAuth.model_validate(v3_auth("sha_aes", auth_password="another-password"))
    assert probe.user_of(other) is not user
    assert probe.user_of(SnmpAuth(version=2, community=SecretStr("public"))) is None


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    """`*_file` secrets are read relative to the config dir, kept secret, never printed."""
    (tmp_path / "auth").write_text("auth-secret-1\n")
    (tmp_path / "priv").write_text("priv-secret-2\n")
    auth = SnmpAuth.model_validate(
        {
            "version": 3,
            "username": "ops",
            "auth_password_file": "auth",
            "priv_password_file": "priv",
        },
        context={"config_dir": tmp_path},
    )
    assert isinstance(auth.auth_password, SecretStr)
    assert auth.auth_password.get_secret_value() == "auth-secret-1"
    assert auth.priv_password is not None
    assert auth.priv_password.get_secret_value() == "priv-secret-2"
    shown = f"{auth!r} {auth} {auth.model_dump()} {auth.describe()}"
    assert "secret-1" not in shown and "secret-2" not in shown

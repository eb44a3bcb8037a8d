"""SNMP credentials (`snmp.auths` entries): a v1/v2c community or a v3 user, and their keys.

An auth is checked at load time (fields that fit the version and security level, secrets
read from `*_file`), then turned into what each engine wants: a gufo-snmp `User` with master
keys (`SnmpAuth.user`) or pysnmp's USM arguments (`pysnmp_usm`, for context polls and traps).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from gufo.snmp import (
    Aes128Key,
    Aes192Key,
    Aes256Key,
    BaseAuthKey,
    BasePrivKey,
    DesKey,
    KeyExpansion,
    Md5Key,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    User,
)
from gufo.snmp.user import KeyType
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from vigie.core.secrets import ConfigPath, resolve_secret_field

__all__ = [
    "AUTH_KEYS",
    "AUTH_MACS",
    "BUILTIN_AUTHS",
    "MAX_CONTEXT_OCTETS",
    "PRIV_KEYS",
    "SnmpAuth",
    "pysnmp_usm",
]

AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["DES", "AES", "AES192", "AES256", "AES192C", "AES256C"]
SecurityLevel = Literal["noAuthNoPriv", "authNoPriv", "authPriv"]

# Same names as snmp_exporter; the C variants are the Cisco/Reeder AES-192/256 key extension.
AUTH_KEYS: dict[str, type[BaseAuthKey]] = {
    "MD5": Md5Key,
    "SHA": Sha1Key,
    "SHA224": Sha224Key,
    "SHA256": Sha256Key,
    "SHA384": Sha384Key,
    "SHA512": Sha512Key,
}
PRIV_KEYS: dict[str, tuple[type[BasePrivKey], KeyExpansion]] = {
    "DES": (DesKey, KeyExpansion.Blumenthal),
    "AES": (Aes128Key, KeyExpansion.Blumenthal),
    "AES192": (Aes192Key, KeyExpansion.Blumenthal),
    "AES256": (Aes256Key, KeyExpansion.Blumenthal),
    "AES192C": (Aes192Key, KeyExpansion.Cisco),
    "AES256C": (Aes256Key, KeyExpansion.Cisco),
}
MAX_CONTEXT_OCTETS = 32
"""An SNMPv3 contextName is an SnmpAdminString: at most 32 octets of UTF-8 (RFC 3411)."""

# HMAC digest and truncated MAC length per auth protocol (RFC 3414, RFC 7860).
AUTH_MACS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 12),
    "SHA": ("sha1", 12),
    "SHA224": ("sha224", 16),
    "SHA256": ("sha256", 24),
    "SHA384": ("sha384", 32),
    "SHA512": ("sha512", 48),
}


class SnmpAuth(BaseModel):
    """Credentials for one kind of device: a v1/v2c community or a v3 user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1, 2, 3] = Field(2, description="SNMP version: 1, 2 (v2c) or 3.")
    community: SecretStr | None = Field(None, description="v1/v2c community (prefer _file).")
    community_file: ConfigPath | None = Field(None, description="File holding the community.")
    username: str | None = Field(None, description="v3 user name.")
    security_level: SecurityLevel | None = Field(
        None, description="v3: noAuthNoPriv, authNoPriv or authPriv (default from passwords)."
    )
    auth_protocol: AuthProtocol = Field("SHA", description="v3 authentication protocol.")
    auth_password: SecretStr | None = Field(None, description="v3 auth password (prefer _file).")
    auth_password_file: ConfigPath | None = Field(None, description="File with the password.")
    priv_protocol: PrivProtocol = Field("AES", description="v3 privacy protocol.")
    priv_password: SecretStr | None = Field(None, description="v3 privacy password.")
    priv_password_file: ConfigPath | None = Field(None, description="File with the password.")
    context_name: str = Field(
        "",
        description="v3 context name (at most 32 octets) for agents serving several MIB "
        "instances (proxy agents, virtual fabrics, per-VLAN bridge MIB); such checks poll "
        "through pysnmp, whose table walks cost about 4x the CPU of the default path.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Read secret files, then check that the fields fit the version and security level."""
        for name in ("community", "auth_password", "priv_password"):
            resolve_secret_field(self, name)
        v3_fields = [
            n
            for n in ("username", "security_level", "auth_password", "priv_password")
            if getattr(self, n) is not None
        ]
        if self.version in (1, 2):
            if v3_fields:
                raise ValueError(f"{v3_fields[0]} is only for version 3")
            if self.context_name:
                raise ValueError("context_name is only for version 3")
            if self.community is None:
                raise ValueError(f"version {self.version} needs community or community_file")
            return self
        if self.community is not None:
            raise ValueError("community is only for versions 1 and 2")
        if not self.username:
            raise ValueError("version 3 needs username")
        size = len(self.context_name.encode())
        if size > MAX_CONTEXT_OCTETS:
            raise ValueError(
                f"context_name must be at most {MAX_CONTEXT_OCTETS} octets "
                f"(SnmpAdminString), got {size}"
            )
        level = self.security_level or (
            "authPriv"
            if self.priv_password
            else "authNoPriv"
            if self.auth_password
            else "noAuthNoPriv"
        )
        object.__setattr__(self, "security_level", level)
        needs = {
            "noAuthNoPriv": (),
            "authNoPriv": ("auth_password",),
            "authPriv": ("auth_password", "priv_password"),
        }[level]
        for name in ("auth_password", "priv_password"):
            secret: SecretStr | None = getattr(self, name)
            if name in needs and secret is None:
                raise ValueError(f"security_level {level} needs {name} or {name}_file")
            if name not in needs and secret is not None:
                raise ValueError(f"{name} is set but security_level is {level}")
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{name} must be at least 8 characters (RFC 3414)")
        return self

    def user(self) -> User:
        """Return the gufo-snmp v3 user with master keys: gufo-snmp localises them per agent.

        RFC 3414's password-to-key hashes a megabyte per password (0.7 ms with SHA-1): the
        probe keeps the user of each auth (SnmpProbe.user_of) instead of paying it every poll.
        """
        auth_key = priv_key = None
        expansion = KeyExpansion.Blumenthal
        auth_cls = AUTH_KEYS[self.auth_protocol]
        if self.auth_password is not None:
            master = auth_cls.get_master_key(self.auth_password.get_secret_value().encode())
            auth_key = auth_cls(master, key_type=KeyType.Master)
        if self.priv_password is not None:
            priv_cls, expansion = PRIV_KEYS[self.priv_protocol]
            # The privacy master key comes from the auth protocol's hash (RFC 3414 8.1.1.1).
            master = auth_cls.get_master_key(self.priv_password.get_secret_value().encode())
            priv_key = priv_cls(master, key_type=KeyType.Master)
        return User(
            self.username or "", auth_key=auth_key, priv_key=priv_key, key_expansion=expansion
        )

    def describe(self) -> str:
        """Return a secret-free description, e.g. `v3 user ops authPriv SHA256/AES`."""
        if self.version != 3:
            return f"v{'2c' if self.version == 2 else '1'} community"
        protos = {
            "authPriv": f" {self.auth_protocol}/{self.priv_protocol}",
            "authNoPriv": f" {self.auth_protocol}",
        }.get(self.security_level or "", "")
        context = f" context {self.context_name!r}" if self.context_name else ""
        return f"v3 user {self.username!r} {self.security_level}{protos}{context}"


BUILTIN_AUTHS: dict[str, SnmpAuth] = {
    "public_v2": SnmpAuth(version=2, community=SecretStr("public")),
}
"""Auths every config has unless it defines the same name: v2c community `public`."""


# Vigie's protocol names -> pysnmp's USM service ids (AES192/256 are Blumenthal key extension,
# the C variants Reeder/Cisco's, as for gufo-snmp above); looked up when pysnmp is loaded.
_PYSNMP_AUTH = {
    "MD5": "USM_AUTH_HMAC96_MD5",
    "SHA": "USM_AUTH_HMAC96_SHA",
    "SHA224": "USM_AUTH_HMAC128_SHA224",
    "SHA256": "USM_AUTH_HMAC192_SHA256",
    "SHA384": "USM_AUTH_HMAC256_SHA384",
    "SHA512": "USM_AUTH_HMAC384_SHA512",
}
_PYSNMP_PRIV = {
    "DES": "USM_PRIV_CBC56_DES",
    "AES": "USM_PRIV_CFB128_AES",
    "AES192": "USM_PRIV_CFB192_AES_BLUMENTHAL",
    "AES256": "USM_PRIV_CFB256_AES_BLUMENTHAL",
    "AES192C": "USM_PRIV_CFB192_AES",
    "AES256C": "USM_PRIV_CFB256_AES",
}


def pysnmp_usm(auth: SnmpAuth) -> tuple[Any, str | None, Any, str | None]:
    """Return a v3 auth as pysnmp's add_v3_user wants it: auth protocol and key, priv too.

    pysnmp is imported here, not with this module: only context polls and traps need it.
    """
    from pysnmp.entity import config as snmp_config  # type: ignore[import-untyped]

    auth_proto, auth_key = snmp_config.USM_AUTH_NONE, None
    priv_proto, priv_key = snmp_config.USM_PRIV_NONE, None
    if auth.auth_password is not None:
        auth_proto = getattr(snmp_config, _PYSNMP_AUTH[auth.auth_protocol])
        auth_key = auth.auth_password.get_secret_value()
    if auth.priv_password is not None:
        priv_proto = getattr(snmp_config, _PYSNMP_PRIV[auth.priv_protocol])
        priv_key = auth.priv_password.get_secret_value()
    return auth_proto, auth_key, priv_proto, priv_key

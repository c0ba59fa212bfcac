"""Authentication modes, roles and the user a dashboard request comes from; pure functions, no Streamlit.

The dashboard is open on a loopback address (one researcher on a laptop: that user is `admin`). Anywhere
else it needs a login, configured in DATAMODELS_AUTH:

    header:X-Forwarded-User   a trusted reverse proxy (oauth2-proxy, Authelia, nginx auth_request)
                              authenticates and sends the user's name in that header, UTF-8 encoded; the
                              proxy must overwrite any such header the client sent (a request holding the
                              header twice, or a value that is not UTF-8, is refused)
    oidc[:CLAIM]              Streamlit's st.login with the OIDC provider of .streamlit/secrets.toml;
                              the user is that claim of st.user (default: email, used only when the
                              provider's email_verified claim is true)

A user name is compared exactly, after NFC alone (backend.access.names.validate_name, which refuses names
that only NFKC folding would match, such as fullwidth or math-bold letters), with the roles' names
normalised the same way: no two distinct names share a role entry.

Roles (`viewer` reads, `reviewer` also votes and tags, `admin` also retrains and exports everyone's votes) come
from DATAMODELS_ROLES (`alice=admin,bob=reviewer,*=viewer`) and/or the TOML file DATAMODELS_ROLES_FILE
(a `[roles]` table of the same pairs; the variable's pairs win). `*` is everyone not listed; without it
they are viewers.
"""
from __future__ import annotations

import ipaddress
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from backend.access.names import AnnotatorNameError, validate_name

AUTH_ENV = "DATAMODELS_AUTH"
ROLES_ENV = "DATAMODELS_ROLES"
ROLES_FILE_ENV = "DATAMODELS_ROLES_FILE"
ROLES = ("viewer", "reviewer", "admin")
PERMISSIONS = {"viewer": frozenset(), "reviewer": frozenset({"vote", "tag"}),
               "admin": frozenset({"vote", "tag", "retrain", "export"})}
EVERYONE = "*"
DEFAULT_ROLE = "viewer"
DEFAULT_CLAIM = "email"
# The one user of a dashboard served on a loopback address without auth.
LOCAL_USER = "local"


class AuthConfigError(ValueError):
    """DATAMODELS_AUTH or the roles are malformed; the message names the variable and a valid value."""


class AccessDenied(PermissionError):
    """The request has no user the configuration accepts; the message says what is missing."""


@dataclass(frozen=True)
class AuthMode:
    """kind: 'off', 'header' (name = the header) or 'oidc' (name = the claim of st.user)."""
    kind: str
    name: str = ""

    @property
    def enabled(self) -> bool:
        return self.kind != "off"


@dataclass(frozen=True)
class User:
    name: str
    role: str
    authenticated: bool  # False only for the local user of an unauthenticated loopback server

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


def parse_auth(value: str | None) -> AuthMode:
    """The auth mode of a DATAMODELS_AUTH value: '' or 'off', 'header:NAME', 'oidc' or 'oidc:CLAIM'."""
    value = (value or "").strip()
    if value in ("", "off"):
        return AuthMode("off")
    kind, _, name = value.partition(":")
    name = name.strip()
    if kind == "header" and name and all(ch.isalnum() or ch == "-" for ch in name):
        return AuthMode("header", name)
    if kind == "oidc" and (name == "" or name.replace("_", "").isalnum()):
        return AuthMode("oidc", name or DEFAULT_CLAIM)
    raise AuthConfigError(f"{AUTH_ENV}={value!r} is not an auth mode: write header:X-Forwarded-User, oidc, "
                          "oidc:CLAIM or off")


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to `address` (Streamlit's server.address) is reachable from this machine only.

    Unset means every interface (Streamlit's default), so it is not loopback; a Unix socket is local.
    """
    address = (address or "").strip()
    if not address:
        return False
    if address == "localhost" or address.startswith("unix://"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it may be reachable from elsewhere


def parse_roles(text: str, source: str = ROLES_ENV) -> dict[str, str]:
    """{user: role} of 'alice=admin, bob=reviewer, *=viewer'."""
    roles = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        user, sep, role = (s.strip() for s in entry.partition("="))
        if not sep or not user:
            raise AuthConfigError(f"{source}: {entry!r} is not USER=ROLE: write e.g. alice=admin,*=viewer")
        roles[user] = role
    return check_roles(roles, source)


def check_roles(roles: Mapping[str, object], source: str) -> dict[str, str]:
    """The roles with each user's name in NFC, the form request_user compares."""
    for user, role in roles.items():
        if role not in ROLES:
            raise AuthConfigError(f"{source}: {user} has role {role!r}: use one of {', '.join(ROLES)}")
    return {unicodedata.normalize("NFC", user): role for user, role in roles.items()}


def load_roles(environ: Mapping[str, str]) -> dict[str, str]:
    """{user: role} from DATAMODELS_ROLES_FILE's [roles] table, then DATAMODELS_ROLES (which wins)."""
    roles = {}
    file = environ.get(ROLES_FILE_ENV, "").strip()
    if file:
        try:
            table = tomllib.loads(Path(file).read_text(encoding="utf-8")).get("roles", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AuthConfigError(f"{ROLES_FILE_ENV}: cannot read the roles file ({type(exc).__name__}): "
                                  "write a TOML file with a [roles] table, e.g. alice = \"admin\"") from None
        if not isinstance(table, dict):
            raise AuthConfigError(f"{ROLES_FILE_ENV}: [roles] must be a table of user = \"role\"")
        roles.update(check_roles(table, ROLES_FILE_ENV))
    roles.update(parse_roles(environ.get(ROLES_ENV, "")))
    return roles


def role_of(name: str, roles: Mapping[str, str]) -> str:
    return roles.get(name, roles.get(EVERYONE, DEFAULT_ROLE))


def header_value(headers: Mapping[str, str] | Iterable[tuple[str, str]], header: str) -> str | None:
    """The one value of `header` among a request's header lines (name, value), whatever their case, decoded
    as UTF-8; None when absent. The server hands values over as Latin-1 text (one character per byte), so
    they are re-encoded to their bytes first.

    Refused (AccessDenied): the header twice, or one value holding several (a proxy that appends to what the
    client sent, instead of overwriting it, would let the client choose the name), and bytes that are not UTF-8.
    """
    wanted = header.lower()
    lines = headers.items() if isinstance(headers, Mapping) else headers
    values = [value for key, value in lines if key.lower() == wanted]
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise AccessDenied(f"the request holds {header} more than once: the proxy must overwrite the header the "
                           "client sent, not add to it")
    try:
        return values[0].encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise AccessDenied(f"the {header} header is not UTF-8: configure the proxy to send the user's name "
                           "UTF-8 encoded") from None


def request_user(mode: AuthMode, address: str | None, roles: Mapping[str, str], *,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 oidc_user: Mapping[str, object] | None = None) -> User:
    """The user of one request, or AccessDenied saying why there is none.

    mode : the parsed DATAMODELS_AUTH; address : Streamlit's server.address; headers : the request's
    HTTP header lines, (name, value) pairs with repeats (header mode); oidc_user : st.user as a dict (oidc
    mode; is_logged_in and the claims).
    """
    if not mode.enabled:
        if not is_loopback(address):
            shown = address or "every interface"
            raise AccessDenied(f"this dashboard listens on {shown}, so it must know who you are: set {AUTH_ENV}="
                               "header:X-Forwarded-User behind an authenticating proxy (or oidc with st.login), "
                               "or serve it on localhost")
        return User(LOCAL_USER, "admin", authenticated=False)
    if mode.kind == "header":
        raw = header_value(headers or {}, mode.name)
        if raw is None:
            raise AccessDenied(f"the request has no {mode.name} header: open the dashboard through its "
                               "authenticating proxy")
    else:
        oidc_user = oidc_user or {}
        if not oidc_user.get("is_logged_in"):
            raise AccessDenied("you are not logged in: log in with the button below")
        raw = oidc_user.get(mode.name)
        if not isinstance(raw, str):
            raise AccessDenied(f"the identity provider sent no {mode.name!r} claim: set {AUTH_ENV}=oidc:CLAIM "
                               "to a claim it sends")
        if mode.name == "email" and oidc_user.get("email_verified") is not True:
            raise AccessDenied("the identity provider has not verified your email address (email_verified is not "
                               f"true): verify it with the provider, or set {AUTH_ENV}=oidc:CLAIM to another claim")
    try:
        name = validate_name(raw)
        if name != unicodedata.normalize("NFC", raw):
            raise AnnotatorNameError("it has surrounding whitespace")
    except AnnotatorNameError as exc:
        raise AccessDenied(f"the signed-in user name is unusable ({exc})") from None
    return User(name, role_of(name, roles), authenticated=True)

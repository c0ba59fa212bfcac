"""Auth modes, loopback binds, roles and the user of a request (backend/access/auth.py)."""
import pytest

from tests.conftest import record_count
from backend.access.auth import (AccessDenied, AuthConfigError, AuthMode, LOCAL_USER, ROLES_ENV, ROLES_FILE_ENV,
                                 is_loopback, load_roles, parse_auth, parse_roles, request_user, role_of)

HEADER = AuthMode("header", "X-Forwarded-User")
OIDC = AuthMode("oidc", "email")


def test_auth_modes_parse_and_bad_ones_name_the_variable():
    assert parse_auth(None) == parse_auth("") == parse_auth(" off ") == AuthMode("off")
    assert parse_auth("header:X-Forwarded-User") == HEADER
    assert parse_auth("oidc") == OIDC and parse_auth("oidc:preferred_username") == AuthMode("oidc", "preferred_username")
    for bad in ("header", "header:", "header:X Forwarded", "basic", "oidc:a-b", "header:X:Y"):
        with pytest.raises(AuthConfigError, match="DATAMODELS_AUTH.*header:X-Forwarded-User"):
            parse_auth(bad)


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("unix:///tmp/st.sock", True), (None, False), ("", False), ("0.0.0.0", False), ("::", False),
    ("192.168.1.4", False), ("10.0.0.1", False), ("example.org", False), ("localhost.evil.example", False),
])
def test_only_loopback_addresses_count_as_local(address, loopback):
    assert is_loopback(address) is loopback


def test_roles_from_the_variable_and_the_file_the_variable_wins(tmp_path):
    assert parse_roles(" alice=admin , bob = reviewer,*=viewer,") == {"alice": "admin", "bob": "reviewer", "*": "viewer"}
    for bad, says in (("alice", "not USER=ROLE"), ("=admin", "not USER=ROLE"), ("alice=root", "one of viewer, reviewer, admin")):
        with pytest.raises(AuthConfigError, match=says):
            parse_roles(bad)
    file = tmp_path / "roles.toml"
    file.write_text('[roles]\nalice = "reviewer"\ncarol = "admin"\n"*" = "reviewer"\n')
    roles = load_roles({ROLES_FILE_ENV: str(file), ROLES_ENV: "alice=admin"})
    assert roles == {"alice": "admin", "carol": "admin", "*": "reviewer"}
    assert role_of("dave", roles) == "reviewer" and role_of("dave", {}) == "viewer"
    file.write_text("[roles\n")
    with pytest.raises(AuthConfigError, match="DATAMODELS_ROLES_FILE.*TOML"):
        load_roles({ROLES_FILE_ENV: str(file)})
    with pytest.raises(AuthConfigError, match="DATAMODELS_ROLES_FILE"):
        load_roles({ROLES_FILE_ENV: str(tmp_path / "missing.toml")})
    file.write_text('[roles]\nalice = 3\n')
    with pytest.raises(AuthConfigError, match="alice has role 3"):
        load_roles({ROLES_FILE_ENV: str(file)})


def test_without_auth_only_a_loopback_server_has_its_one_local_admin():
    user = request_user(AuthMode("off"), "127.0.0.1", {"*": "viewer"})
    assert (user.name, user.role, user.authenticated) == (LOCAL_USER, "admin", False)
    assert user.can("retrain") and user.can("vote") and user.can("export")
    for address in (None, "0.0.0.0", "192.168.1.4"):
        with pytest.raises(AccessDenied, match="must know who you are.*DATAMODELS_AUTH=header:X-Forwarded-User"):
            request_user(AuthMode("off"), address, {})


def test_the_header_names_the_user_whatever_its_case_and_the_roles_say_what_they_may_do():
    roles = {"alice": "admin", "bob": "reviewer"}
    for address in ("0.0.0.0", "127.0.0.1"):  # with auth on, loopback gives no one admin rights
        alice = request_user(HEADER, address, roles, headers={"x-forwarded-user": "alice"})
        assert (alice.name, alice.role, alice.authenticated) == ("alice", "admin", True)
    bob = request_user(HEADER, None, roles, headers={"X-Forwarded-User": "bob"})
    assert bob.can("vote") and not bob.can("retrain") and not bob.can("export")
    eve = request_user(HEADER, None, roles, headers={"X-Forwarded-User": "eve"})
    assert eve.role == "viewer" and not eve.can("vote") and not eve.can("retrain")
    with pytest.raises(AccessDenied, match="no X-Forwarded-User header.*proxy"):
        request_user(HEADER, None, roles, headers={"Host": "x"})
    for bad in ("", "   ", "a\nb", "x" * 65, " alice "):
        with pytest.raises(AccessDenied, match="user name is unusable"):
            request_user(HEADER, None, roles, headers={"X-Forwarded-User": bad})


def test_oidc_needs_a_login_and_the_configured_claim():
    user = request_user(OIDC, "0.0.0.0", {"ann@x.org": "reviewer"},
                        oidc_user={"is_logged_in": True, "email": "ann@x.org", "email_verified": True})
    assert (user.name, user.role) == ("ann@x.org", "reviewer")
    with pytest.raises(AccessDenied, match="not logged in"):
        request_user(OIDC, None, {}, oidc_user={"is_logged_in": False, "email": "ann@x.org"})
    with pytest.raises(AccessDenied, match="not logged in"):
        request_user(OIDC, None, {}, oidc_user=None)
    with pytest.raises(AccessDenied, match="no 'email' claim.*oidc:CLAIM"):
        request_user(OIDC, None, {}, oidc_user={"is_logged_in": True, "sub": "123"})


# Hostile identities: each gets no one else's role (issue 25). Alice is the admin.
ROLES = {"alice": "admin", "alice@lab.org": "admin", "jos\u00e9": "reviewer", "*": "viewer"}
FOLDED = {"fullwidth": "\uff41\uff4c\uff49\uff43\uff45", "math bold": "\U0001d41a\U0001d425\U0001d422\U0001d41c\U0001d41e",
          "math italic": "\U0001d44e\U0001d459\U0001d456\U0001d450\U0001d452", "circled": "\u24d0\u24db\u24d8\u24d2\u24d4",
          "fullwidth email": "\uff41lice@lab.org", "superscript": "alic\u1d49", "ligature": "\ufb00alice"}


@pytest.mark.parametrize("styled", FOLDED)
def test_a_name_that_only_nfkc_folds_onto_another_is_refused_not_given_its_role(styled):
    for mode, request in ((HEADER, {"headers": {"X-Forwarded-User": FOLDED[styled].encode().decode("latin-1")}}),
                          (OIDC, {"oidc_user": {"is_logged_in": True, "email": FOLDED[styled], "email_verified": True}})):
        with pytest.raises(AccessDenied, match="compatibility characters"):
            request_user(mode, None, ROLES, **request)
        record_count("Unicode identity", "refused")


@pytest.mark.parametrize("verified", [False, None, "true", 1, "missing"])
def test_an_unverified_oidc_email_gets_no_role(verified):
    claims = {"is_logged_in": True, "email": "alice@lab.org"}
    if verified != "missing":
        claims["email_verified"] = verified
    with pytest.raises(AccessDenied, match="not verified your email.*oidc:CLAIM"):
        request_user(OIDC, None, ROLES, oidc_user=claims)
    record_count("unverified OIDC email", "refused")
    # another claim is the provider's to vouch for
    user = request_user(AuthMode("oidc", "preferred_username"), None, ROLES,
                        oidc_user={"is_logged_in": True, "preferred_username": "alice", "email_verified": False})
    assert user.role == "admin"


@pytest.mark.parametrize("lines", [
    [("X-Forwarded-User", "eve"), ("X-Forwarded-User", "alice")],
    [("X-Forwarded-User", "alice"), ("x-forwarded-user", "alice")],
    [("X-Forwarded-User", "eve, alice")],
])
def test_a_repeated_header_is_refused(lines):
    with pytest.raises(AccessDenied, match="more than once.*overwrite"):
        request_user(HEADER, None, ROLES, headers=lines)
    record_count("identity header", "refused")


def test_a_utf8_header_is_decoded_and_a_non_utf8_one_refused():
    """The server hands a header over as Latin-1 text: the proxy's UTF-8 bytes of josé arrive as josÃ©."""
    utf8 = "jos\u00e9".encode("utf-8").decode("latin-1")
    assert utf8 == "jos\u00c3\u00a9"
    user = request_user(HEADER, None, ROLES, headers=[("X-Forwarded-User", utf8)])
    assert (user.name, user.role) == ("jos\u00e9", "reviewer")
    decomposed = "jose\u0301".encode("utf-8").decode("latin-1")  # NFC: the same name
    assert request_user(HEADER, None, ROLES, headers=[("X-Forwarded-User", decomposed)]).role == "reviewer"
    for garbled in ("jos\u00e9", "\u00ff\u00fe", "caf\u00c3"):  # Latin-1 é, bytes FF FE, a cut UTF-8 sequence
        with pytest.raises(AccessDenied, match="not UTF-8"):
            request_user(HEADER, None, ROLES, headers=[("X-Forwarded-User", garbled)])
        record_count("identity header", "refused")


def test_exact_names_keep_their_roles_and_distinct_names_stay_distinct():
    for name, role in (("alice", "admin"), ("Alice", "viewer"), ("alice ", None), ("al\u0456ce", None)):
        headers = [("X-Forwarded-User", name.encode().decode("latin-1"))]
        if role is None:  # surrounding whitespace; a Cyrillic і among Latin letters
            with pytest.raises(AccessDenied):
                request_user(HEADER, None, ROLES, headers=headers)
        else:
            assert request_user(HEADER, None, ROLES, headers=headers).role == role

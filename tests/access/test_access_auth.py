"""Auth modes, loopback binds, roles and the user of a request (backend/access/auth.py)."""
import pytest

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
        alice = request_user(HEADER, address, roles, headers={"x-forwarded-user": " alice "})
        assert (alice.name, alice.role, alice.authenticated) == ("alice", "admin", True)
    bob = request_user(HEADER, None, roles, headers={"X-Forwarded-User": "bob"})
    assert bob.can("vote") and not bob.can("retrain") and not bob.can("export")
    eve = request_user(HEADER, None, roles, headers={"X-Forwarded-User": "eve"})
    assert eve.role == "viewer" and not eve.can("vote") and not eve.can("retrain")
    with pytest.raises(AccessDenied, match="no X-Forwarded-User header.*proxy"):
        request_user(HEADER, None, roles, headers={"Host": "x"})
    for bad in ("", "   ", "a\nb", "x" * 65):
        with pytest.raises(AccessDenied, match="user name is unusable"):
            request_user(HEADER, None, roles, headers={"X-Forwarded-User": bad})


def test_oidc_needs_a_login_and_the_configured_claim():
    user = request_user(OIDC, "0.0.0.0", {"ann@x.org": "reviewer"}, oidc_user={"is_logged_in": True, "email": "ann@x.org"})
    assert (user.name, user.role) == ("ann@x.org", "reviewer")
    with pytest.raises(AccessDenied, match="not logged in"):
        request_user(OIDC, None, {}, oidc_user={"is_logged_in": False, "email": "ann@x.org"})
    with pytest.raises(AccessDenied, match="not logged in"):
        request_user(OIDC, None, {}, oidc_user=None)
    with pytest.raises(AccessDenied, match="no 'email' claim.*oidc:CLAIM"):
        request_user(OIDC, None, {}, oidc_user={"is_logged_in": True, "sub": "123"})

"""Who the user is (DATAMODELS_AUTH, roles) and the one retraining job slot, as the pages ask for them."""
from __future__ import annotations

import os
from contextlib import contextmanager

import streamlit as st

from backend.access import auth
from backend.access.budget import BudgetError, budget_from_env, server_budget
from backend.store.run_dir import Run
from widgets.text import plain


def current_user() -> auth.User:
    """The user of this request under DATAMODELS_AUTH, or one st.error (and a login button for OIDC) and stop.

    A server on a loopback address without auth has one user, `local`, an admin. Anywhere else every page
    refuses until auth is configured; app.py and current_run call this before anything is drawn.
    """
    mode = auth.AuthMode("off")
    try:
        mode = auth.parse_auth(os.environ.get(auth.AUTH_ENV))
        roles = auth.load_roles(os.environ)
        return auth.request_user(mode, st.get_option("server.address"), roles,
                                 headers=_header_lines() if mode.kind == "header" else None,
                                 oidc_user=st.user.to_dict() if mode.kind == "oidc" else None)
    except (auth.AuthConfigError, auth.AccessDenied) as exc:
        st.error(str(exc))
        if mode.kind == "oidc" and isinstance(exc, auth.AccessDenied):
            st.button("Log in", key="login", on_click=st.login, type="primary")
        st.stop()


def _header_lines() -> list[tuple[str, str]]:
    """The request's header lines, a repeated header once per line (st.context.headers keeps the first alone)."""
    headers = st.context.headers
    return [(key, value) for key in headers for value in headers.get_all(key)]


def can_retrain() -> bool:
    return current_user().can("retrain")


@contextmanager
def retraining_job(run: Run, n_models: int):
    """Run the body as the server's one retraining job of at most n_models, charged to run's budget.

    Only users who may retrain (admins; the local user) get here; anyone else, or a click over the
    budget, gets one st.error and the page stops. A click while another job runs waits its turn, showing
    its place in the queue. Yields the budget's Job: set its `trained` to the models really trained.
    """
    user = current_user()
    if not user.can("retrain"):
        st.error(f"Retraining needs the admin role; you are {plain(user.name)} ({user.role}). "
                 "Ask an admin, or retrain with the command line.")
        st.stop()
    queued = st.empty()

    def show_place(ahead: int, holder: str | None) -> None:
        queued.info(f"Queued: {ahead} retraining job{'s' if ahead != 1 else ''} ahead of yours"
                    + (f" ({plain(holder)} is retraining)" if holder else "") + "; it starts when they finish.")
    try:
        budget = server_budget(budget_from_env(os.environ))
        with budget.job(run.dir.resolve(), n_models, user.name, on_wait=show_place) as job:
            queued.empty()
            yield job
    except BudgetError as exc:
        st.error(str(exc))
        st.stop()

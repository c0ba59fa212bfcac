"""Who you are and what you may do, through the app shell under AppTest (st.login users seeded as AppTest.user).

The trusted-header mode and a real non-loopback bind are driven in a real browser in test_browser.py.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from streamlit import config

from backend.access.auth import AUTH_ENV, ROLES_ENV
from backend.access.budget import BUDGET_ENV
from backend.leakage.analysis import load_candidates, review_candidates
from backend.leakage.annotations import ENV_VAR, AnnotationStore
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from backend.training import retrain_store
from tests.access.test_access_budget import waiting
from tests.conftest import open_app

PLANTED = "planted"
ROLES = "alice=reviewer, bob=reviewer, root=admin, *=viewer"
PAGES = ["overview", "dataset", "neighbours", "quality", "pca", "clusters", "embeddings_map", "counterfactuals",
         "review", "leakage_results"]


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    path = tmp_path / "votes.db"
    path.touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{path}")
    return f"sqlite:///{path}"


@pytest.fixture
def team(leakage_data_dir, db, monkeypatch):
    """The planted run served with st.login (OIDC) auth and ROLES."""
    monkeypatch.setenv(DATA_DIR_ENV, str(leakage_data_dir))
    monkeypatch.setenv(AUTH_ENV, "oidc")
    monkeypatch.setenv(ROLES_ENV, ROLES)
    return Run(leakage_data_dir / "runs" / PLANTED)


def shown_test(at) -> int:
    caption = next(i for i in at.get("image") if "queue score" in str(i.proto))
    return int(str(caption.proto).split("test:")[1].split(" ")[0])


def reviewed_text(at) -> str:
    return str(at.get("progress")[0].proto)


def test_a_url_parameter_cannot_change_who_you_are(team, db):
    at = open_app({"run": PLANTED, "annotator": "bob"}, "review", user="alice")
    assert at.text[0].value == "Reviewing as: alice"
    assert "annotator" not in at.query_params
    assert not [w for w in at.text_input if w.key == "annotator_input"]
    assert not [b for b in at.button if b.key == "sign_out"]  # no "Change annotator" with auth on
    at.button(key="submit").click().run()
    assert {v.annotator for v in AnnotationStore(db).votes(PLANTED)} == {"alice"}
    # Not in a later run of the same session either.
    at.query_params["annotator"] = "bob"
    at.session_state["annotator"] = "bob"
    assert at.run().text[0].value == "Reviewing as: alice"


def test_one_user_cannot_undo_or_see_another_users_votes(team, db):
    run = team
    candidates = load_candidates(run)
    first = int(candidates.queue[0])
    shown = [c.train for c in review_candidates(run, candidates, first)]
    alice = open_app({"run": PLANTED}, "review", user="alice")
    alice.button(key=f"mark-{PLANTED}-test:{first}-train:{shown[0]}").click().run()  # keyed by target names
    alice.button(key="submit").click().run()
    store = AnnotationStore(db)
    before = store.votes(PLANTED)
    assert len(before) == len(shown)

    bob = open_app({"run": PLANTED, "annotator": "alice"}, "review", user="bob")
    assert bob.text[0].value == "Reviewing as: bob"
    assert f"0 of {run.n_test}" in reviewed_text(bob) and shown_test(bob) == first
    marks = [b for b in bob.button if b.key.startswith("mark-")]
    assert marks and all(b.proto.type == "secondary" for b in marks)  # alice's mark is not on bob's screen
    bob.button(key="undo").click().run()
    assert "Nothing to undo." in [c.value for c in bob.caption]
    assert store.votes(PLANTED) == before


def test_a_viewer_cannot_vote(team, db):
    at = open_app({"run": PLANTED}, "review", user="eve")
    assert len(at.error) == 1 and "reviewer or admin role" in at.error[0].value and "viewer" in at.error[0].value
    assert not [b for b in at.button if b.key in ("submit", "none") or b.key.startswith("mark-")]


def test_who_voted_what_is_for_admins(team, db):
    store = AnnotationStore(db)
    test = int(load_candidates(team).queue[0])
    for name in ("alice", "bob"):
        store.submit(PLANTED, test, name, {3: name == "alice", 4: False})
    bob = open_app({"run": PLANTED}, "leakage_results", user="bob")
    assert {m.label: m.value for m in bob.metric}["Annotators"] == "2"  # scores are for everyone
    assert not bob.dataframe and "admins only" in " ".join(c.value for c in bob.caption)
    labels = {d.proto.label for d in bob.get("download_button")}
    assert labels == {"Your votes (CSV)", "Your votes (JSON)", "Scores (CSV)", "Scores (JSON)"}
    root = open_app({"run": PLANTED}, "leakage_results", user="root")
    assert sorted(root.dataframe[0].value["annotator"]) == ["alice", "bob"]
    assert {"Votes (CSV)", "Votes (JSON)"} <= {d.proto.label for d in root.get("download_button")}


def test_a_logged_out_visitor_gets_the_login_button_only(team):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.user = {"is_logged_in": False}
    at.query_params["run"] = PLANTED
    at.run()
    assert not at.exception and len(at.error) == 1 and "not logged in" in at.error[0].value
    assert [b.label for b in at.button] == ["Log in"] and not at.title


@pytest.fixture
def cf_page(counterfactual_run, tmp_path, monkeypatch):
    """open(user=None, **query) on the counterfactuals page of a fresh copy of counterfactual_run."""
    run_dir = shutil.copytree(counterfactual_run, tmp_path / "data" / "runs" / "cf")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    run = Run(run_dir)
    weights = np.load(run_dir / "weights.npy")
    column = next(t for t in range(run.n_train, run.n_targets) if (weights[t] > 0).sum() >= 3)

    def open_page(user: str | None = None, tab: str = "Predicted effect · verify"):
        """The page with the target's largest weight in the basket (the URL's), on tab `tab`."""
        at = open_app({"run": "cf", "target": f"test:{column - run.n_train}", "basket": str(int(np.argmax(weights[column])))},
                      "counterfactuals", timeout=120, user=user)
        at.session_state["cf_tab"] = tab
        return at.run()
    return open_page, run


def test_a_viewer_cannot_retrain(cf_page, monkeypatch):
    open_page, run = cf_page
    monkeypatch.setenv(AUTH_ENV, "oidc")
    monkeypatch.setenv(ROLES_ENV, ROLES)
    for user in ("eve", "alice"):  # a viewer, and a reviewer: neither may retrain
        at = open_page(user)
        assert at.button(key="cf_verify").disabled
        # A forged click (a widget message the browser would not send for a disabled button) is refused too.
        at.session_state["cf_verify_request"] = True
        at.run()
        assert len(at.error) == 1 and "needs the admin role" in at.error[0].value and user in at.error[0].value
        at = open_page(user, tab="Data support")
        assert at.button(key="cf_certify").disabled
        at.session_state["cf_certify_request"] = True
        assert "needs the admin role" in at.run().error[0].value
    assert retrain_store.summaries(run) == [] and not (run.dir / "support").exists()


def test_the_control_models_button_is_for_admins_too(tiny_run, tmp_path, monkeypatch):
    bare = Run(shutil.copytree(tiny_run, tmp_path / "runs" / "bare"))
    np.save(bare.dir / "weights.npy", np.zeros((bare.n_targets, bare.n_train), dtype=np.float32))
    for name in ("bias.npy", "lam.npy"):
        np.save(bare.dir / name, np.zeros(bare.n_targets, dtype=np.float32))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(AUTH_ENV, "oidc")
    monkeypatch.setenv(ROLES_ENV, ROLES)
    at = open_app({"run": "bare"}, "counterfactuals", user="eve")
    assert at.button(key="cf_build_control").disabled
    at.session_state["cf_control_request"] = True
    assert "needs the admin role" in at.run().error[0].value
    assert not (tmp_path / "runs" / "bare" / "control_margins.npy").exists()


def test_a_click_over_the_runs_budget_is_refused_before_training(cf_page, monkeypatch):
    open_page, run = cf_page
    monkeypatch.setenv(BUDGET_ENV, "3")
    at = open_page()  # the local admin
    at.slider(key="cf_models").set_value(4).run()
    at.button(key="cf_verify").click().run()
    assert len(at.error) == 1 and "up to 4 models, but only 3 of the run's budget of 3 are left" in at.error[0].value
    assert retrain_store.summaries(run) == []


def test_a_click_while_another_job_runs_waits_its_turn_instead_of_being_refused(cf_page):
    """The server's one job slot is held (another run's job); the click queues, then trains once it is freed."""
    import threading

    from backend.access.budget import budget_from_env, server_budget

    open_page, run = cf_page
    at = open_page()  # the local admin, one image in the basket
    budget = server_budget(budget_from_env(os.environ))  # the server's own queue
    other = run.dir.parent / "other"
    other.mkdir()
    holding, release = threading.Event(), threading.Event()

    def alice():
        with budget.job(other, 1, "alice"):
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=alice)
    holder.start()
    assert holding.wait(10)
    freed = threading.Timer(2.0, release.set)
    freed.start()
    at.button(key="cf_verify").click().run(timeout=300)
    holder.join(10)
    assert release.is_set() and not at.error, [e.value for e in at.error]  # it waited, then ran: no refusal
    assert retrain_store.summaries(run) != [] and waiting(budget) == []


def test_a_clear_cache_message_leaves_the_job_slot_its_queue_and_the_spend(cf_page):
    """Any websocket client, logged in or not, may send Streamlit's clear_cache BackMsg; its handler
    (AppSession._handle_clear_cache_request, called here as the server calls it) empties st.cache_data and
    st.cache_resource for everyone. The job that holds the slot, the job queued behind it and the run's spend
    survive it: the next click still waits its turn instead of training beside them."""
    import threading
    from types import SimpleNamespace

    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.state import SessionState

    from backend.access.budget import budget_from_env, server_budget, spent

    open_page, run = cf_page
    at = open_page()
    budget = server_budget(budget_from_env(os.environ))
    other = run.dir.parent / "other"
    other.mkdir()
    holding, release = threading.Event(), threading.Event()

    def alice():
        with budget.job(other, 1, "alice"):
            holding.set()
            release.wait(60)

    def bob():
        with budget.job(other, 1, "bob"):
            pass

    holder, queued = threading.Thread(target=alice), threading.Thread(target=bob)
    holder.start()
    assert holding.wait(10)
    queued.start()
    while waiting(budget) != ["bob"]:
        holding.wait(0.05)
    AppSession._handle_clear_cache_request(SimpleNamespace(_session_state=SessionState()))
    assert server_budget(budget_from_env(os.environ)) is budget and waiting(budget) == ["bob"]
    assert spent(other) == 1
    trained_while_held = []

    def free():
        trained_while_held.append(retrain_store.summaries(run))
        release.set()
    threading.Timer(3.0, free).start()
    at.button(key="cf_verify").click().run(timeout=300)
    holder.join(10)
    queued.join(10)
    assert trained_while_held == [[]], "the click trained while another job held the slot"
    assert not at.error and retrain_store.summaries(run) != []


@pytest.fixture
def everywhere():
    """The in-process server option as `streamlit run --server.address 0.0.0.0` sets it."""
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", "127.0.0.1")


@pytest.mark.parametrize("page", PAGES)
def test_a_server_on_every_interface_refuses_every_page_without_auth(dashboard_data_dir, monkeypatch, everywhere, page):
    monkeypatch.setenv(DATA_DIR_ENV, str(dashboard_data_dir))
    monkeypatch.delenv(AUTH_ENV, raising=False)
    at = open_app({"run": "digits-tiny"}, page)
    assert len(at.error) == 1 and "listens on 0.0.0.0, so it must know who you are" in at.error[0].value
    assert not at.title and not at.get("image") and not at.button


def test_url_parameters_are_shown_as_plain_text_without_server_paths(dashboard_data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(dashboard_data_dir))
    at = open_app({"run": "digits-tiny", "target": "[phish](https://evil.example) ![x](https://evil.example/a.png)"},
                  "neighbours")
    (warning,) = at.warning
    assert warning.value.startswith("`bad target '[phish](https://evil.example) ![x]") and "`; showing test:0" in warning.value
    # An unknown run falls back to the first, bad-manifest: its RunError names the file, not where it lives.
    at = open_app({"run": "[run](https://evil.example)"})
    (warning,) = at.sidebar.warning
    assert "`'[run](https://evil.example)'`" in warning.value and str(dashboard_data_dir) not in warning.value
    assert "$DATAMODELS_DATA_DIR/runs/bad-manifest/manifest.json is corrupt" in at.error[0].value
    for message in [m.value for kind in (at.markdown, at.caption, at.warning, at.info, at.error) for m in kind]:
        assert str(dashboard_data_dir) not in message


def test_plain_text_is_a_code_span_the_text_cannot_close():
    from widgets.text import plain

    assert plain("[a](b)") == "`[a](b)`"
    assert plain("a`b``c") == "```a`b``c```"
    assert plain("`x`") == "`` `x` ``"
    assert plain("line\nbreak") == "`line break`" and plain("  ") == ""

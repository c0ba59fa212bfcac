"""The Review and Leakage results pages under AppTest, on the planted run and a fresh SQLite file per test."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from backend.leakage.annotations import ENV_VAR, AnnotationStore
from backend.leakage.analysis import load_candidates, review_candidates
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from tests.conftest import open_app

RUN = "planted"
HOSTILE = "<b>Zoë</b> O'Neil\"); DROP TABLE votes;--[x](javascript:1)"


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    path = tmp_path / "votes.db"
    path.touch()
    url = f"sqlite:///{path}"
    monkeypatch.setenv(ENV_VAR, url)
    return url


@pytest.fixture
def app(leakage_data_dir, db, monkeypatch):
    """open(page, **query_params) -> an AppTest that has run the app, then `page`."""
    monkeypatch.setenv(DATA_DIR_ENV, str(leakage_data_dir))

    def open_page(page: str, **params: str) -> AppTest:
        return open_app({"run": RUN, **params}, page)
    return open_page


@pytest.fixture(scope="module")
def run(leakage_data_dir) -> Run:
    return Run(leakage_data_dir / "runs" / RUN)


def shown_test(at: AppTest) -> int:
    caption = next(i for i in at.get("image") if "queue score" in str(i.proto))
    return int(str(caption.proto).split("test:")[1].split(" ")[0])


def mark(at: AppTest, test: int, train: int) -> AppTest:
    """Click a candidate's duplicate button (as its keyboard shortcut does)."""
    return at.button(key=mark_key(test, train)).click().run()


def mark_key(test: int, train: int) -> str:
    """A candidate's duplicate button: the page keys it by the two target names."""
    return f"mark-{RUN}-test:{test}-train:{train}"


def marks(at: AppTest) -> list:
    return [b for b in at.button if b.key.startswith("mark-")]


def identify(at: AppTest, name: str) -> AppTest:
    at.text_input(key="annotator_input").set_value(name)
    return at.button(key="identify").click().run()


def test_identify_rejects_an_empty_name_and_keeps_a_hostile_one_verbatim_and_inert(app, db):
    at = app("review")
    at = identify(at, "   ")
    assert "empty" in at.error[0].value and "annotator" not in at.query_params
    at = identify(at, HOSTILE)
    assert not at.exception and not at.error
    assert at.query_params["annotator"] == HOSTILE
    assert at.text[0].value == f"Reviewing as: {HOSTILE}"
    assert all(HOSTILE not in m.value for m in at.markdown)  # never through markdown
    store = AnnotationStore(db)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("select name from annotators").fetchall() == [(HOSTILE,)]


def test_vote_submit_advances_and_writes_every_shown_pair(app, db, run):
    candidates = load_candidates(run)
    first, second = int(candidates.queue[0]), int(candidates.queue[1])
    at = identify(app("review"), "ann")
    assert shown_test(at) == first
    shown = [c.train for c in review_candidates(run, candidates, first)]
    assert sorted(b.key for b in marks(at)) == sorted(mark_key(first, t) for t in shown)
    at = mark(at, first, shown[0])
    assert {b.key for b in marks(at) if b.proto.type == "primary"} == {mark_key(first, shown[0])}
    at = at.button(key="submit").click().run()
    assert not at.exception and not at.error
    assert shown_test(at) == second
    assert f"1 of {run.n_test}" in str(at.get("progress")[0].proto)
    votes = {v.train: v.is_leak for v in AnnotationStore(db).votes(RUN) if v.annotator == "ann" and v.test == first}
    assert votes == {t: t == shown[0] for t in shown}


def test_a_tag_keeps_the_review_queue_to_its_test_images(app, db, run):
    queue = [int(j) for j in load_candidates(run).queue]
    picked = [queue[4], queue[2]]  # the queue's order, not the tag's, decides which comes first
    AnnotationStore(db).add_tag(RUN, "look", [run.n_train + j for j in picked] + [0], "rita")
    at = identify(app("review", tag="look"), "ann")
    assert not at.exception and not at.error
    assert shown_test(at) == queue[2]
    assert "0 of 2" in str(at.get("progress")[0].proto)
    at = at.button(key="submit").click().run()
    assert shown_test(at) == queue[4]


def test_skip_undo_and_resume_after_a_reload(app, db, run):
    queue = [int(j) for j in load_candidates(run).queue]
    at = identify(app("review"), "bea")
    at = at.button(key="submit").click().run()
    at = at.button(key="skip").click().run()
    assert shown_test(at) == queue[2]
    at = at.button(key="undo").click().run()
    assert shown_test(at) == queue[1]
    store = AnnotationStore(db)
    assert store.reviewed(RUN, "bea") == {queue[0]}
    at = at.button(key="skip").click().run()
    # A reload is a new session: the URL names the annotator, the database knows the reviews.
    again = app("review", annotator="bea")
    assert again.text[0].value == "Reviewing as: bea"
    assert shown_test(again) == queue[2]
    # Reviewed means submitted, as on the Leakage results page; the skip is counted apart.
    assert f"1 of {run.n_test} test images reviewed · 1 skipped" in str(again.get("progress")[0].proto)
    undo = again.button(key="undo").click().run()
    assert shown_test(undo) == queue[1] and store.reviewed(RUN, "bea") == {queue[0]}


def test_undo_restores_the_votes_for_correction(app, db, run):
    candidates = load_candidates(run)
    first = int(candidates.queue[0])
    shown = [c.train for c in review_candidates(run, candidates, first)]
    at = identify(app("review"), "cy")
    at = mark(at, first, shown[1])
    at = at.button(key="submit").click().run()
    at = at.button(key="undo").click().run()
    assert shown_test(at) == first
    assert at.button(key=mark_key(first, shown[1])).proto.type == "primary"
    assert at.button(key=mark_key(first, shown[0])).proto.type == "secondary"


def test_none_are_duplicates_votes_every_shown_candidate_no_and_the_results_page_agrees(app, db, run):
    candidates = load_candidates(run)
    first, second = int(candidates.queue[0]), int(candidates.queue[1])
    shown = [c.train for c in review_candidates(run, candidates, first)]
    at = mark(identify(app("review"), "nia"), first, shown[0])  # a mark the "none" action overrides
    at = at.button(key="none").click().run()
    assert f"Saved {len(shown)} votes on test:{first}: none are duplicates." in [c.value for c in at.caption]
    assert shown_test(at) == second
    store = AnnotationStore(db)
    assert {v.train: v.is_leak for v in store.votes(RUN)} == {t: False for t in shown}
    at = at.button(key="skip").click().run()
    assert f"1 of {run.n_test} test images reviewed · 1 skipped" in str(at.get("progress")[0].proto)
    results = app("leakage_results")
    assert {m.label: m.value for m in results.metric}["Test images reviewed"] == "1"


def test_candidates_come_in_source_groups_with_one_key_each(app, run):
    candidates = load_candidates(run)
    first = int(candidates.queue[0])
    shown = review_candidates(run, candidates, first)
    at = identify(app("review"), "kim")
    headers = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")]
    groups = {"top weight": "Datamodel", "bottom weight": "Datamodel", "features": "Features", "pixels": "Pixels"}
    assert headers == list(dict.fromkeys(groups[c.source] for c in shown))
    # The keys follow the order shown: 1, 2, ... 0, then letters; one each, never S/N/K/U nor Streamlit's C/R.
    keys = {int(b.key.rsplit(":", 1)[1]): b.proto.shortcut.upper() for b in marks(at)}  # stored lowercased
    assert [keys[c.train] for c in shown] == list("1234567890QWETYIOPADFGHJLZXVBM"[:len(shown)])
    captions = [c.value for c in at.caption if c.value.startswith("train:")]  # one under each thumbnail
    assert len(captions) == len(shown) and all("\n" not in c for c in captions)


def test_a_vote_the_database_refuses_is_reported_and_not_advanced(app, db, run):
    first = int(load_candidates(run).queue[0])
    at = identify(app("review"), "dan")
    store = AnnotationStore(db)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON votes BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    at = at.button(key="submit").click().run()
    assert "nothing was saved" in at.error[0].value and "submit again" in at.error[0].value
    assert shown_test(at) == first
    assert store.reviewed(RUN, "dan") == set()


def test_a_missing_database_file_is_a_clear_error(app, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'nope' / 'votes.db'}")
    for page in ("review", "leakage_results"):
        at = app(page)
        assert "does not exist" in at.error[0].value and ENV_VAR in at.error[0].value


def seed_votes(db: str, run: Run) -> dict:
    candidates = load_candidates(run)
    store = AnnotationStore(db)
    tests = [int(j) for j in candidates.queue[:3]]
    trains = {t: [c.train for c in review_candidates(run, candidates, t)][:3] for t in tests}
    # t0: everyone marks trains[t0][0]; t1: a conflict on trains[t1][0]; t2: nobody marks anything.
    for name, marks in (("ann", {tests[0], tests[1]}), ("bob", {tests[0]}), (HOSTILE, {tests[0], tests[1]})):
        for t in tests:
            store.submit(RUN, t, name, {tr: (t in marks and tr == trains[t][0]) for tr in trains[t]})
    store.skip(RUN, int(candidates.queue[5]), "bob")
    return {"tests": tests, "trains": trains}


def test_results_show_scores_agreement_and_exports(app, db, run):
    seeded = seed_votes(db, run)
    at = app("leakage_results")
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Annotators"] == "3" and metrics["Test images reviewed"] == "3" and metrics["Pairs voted"] == "9"
    assert metrics["Fleiss' κ"] != "—"
    assert len(at.get("plotly_chart")) == 1
    per_annotator = at.dataframe[0].value
    assert sorted(per_annotator["annotator"]) == sorted(["ann", "bob", HOSTILE])
    assert dict(zip(per_annotator["annotator"], per_annotator["skipped"]))["bob"] == 1
    assert at.dataframe[1].value.shape == (3, 3)
    # The default level is the highest score: the pair everyone marked.
    assert at.select_slider(key="score_level").value == 1.0
    captions = [str(i.proto) for i in at.get("image")]
    t0, tr0 = seeded["tests"][0], seeded["trains"][seeded["tests"][0]][0]
    assert any(f"test:{t0} | train:{tr0} · 3/3 marked" in c for c in captions)
    at.select_slider(key="score_level").set_value(round(2 / 3, 6)).run()
    at.checkbox(key="conflicts_only").check().run()
    t1, tr1 = seeded["tests"][1], seeded["trains"][seeded["tests"][1]][0]
    assert any(f"test:{t1} | train:{tr1} · 2/3 marked" in str(i.proto) for i in at.get("image"))
    assert {d.proto.label for d in at.get("download_button")} >= {"Votes (CSV)", "Votes (JSON)", "Scores (CSV)", "Scores (JSON)"}


def test_results_keep_the_pairs_with_a_tagged_image(app, db, run):
    seeded = seed_votes(db, run)
    t0, t1 = seeded["tests"][:2]
    tr1 = seeded["trains"][t1][0]
    AnnotationStore(db).add_tag(RUN, "second", [run.n_train + t1], "rita")
    at = app("leakage_results", tag="second")
    assert not at.exception and not at.error
    assert not any(f"test:{t0} |" in str(i.proto) for i in at.get("image"))  # the level-1.0 pair is not tagged
    at.select_slider(key="score_level").set_value(round(2 / 3, 6)).run()
    captions = [str(i.proto) for i in at.get("image") if " | train:" in str(i.proto)]
    assert captions and all(f"test:{t1} |" in c for c in captions)
    assert any(f"test:{t1} | train:{tr1} · 2/3 marked" in c for c in captions)


def test_results_without_votes_say_where_to_vote(app):
    at = app("leakage_results")
    assert "Review page" in at.info[0].value


def test_results_with_a_single_score_level(app, db, run):
    test = int(load_candidates(run).queue[0])
    AnnotationStore(db).submit(RUN, test, "solo", {3: False, 4: False})
    at = app("leakage_results")
    assert not at.exception and not at.error
    assert len(at.select_slider) == 0 and at.metric[3].value == "—"
    assert "2 pair(s) at score 0.00" in at.caption[0].value

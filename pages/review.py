"""Review: annotators mark which candidates are the same scene / a near duplicate of a test image.

The paper's leakage study (Ilyas et al. 2022, Sec. 4.3): each task shows one test image beside its top
and bottom training images by datamodel weight, here with the representation baseline's nearest images
added. Test images come in the order of the leak queue (backend/leakage.py). With DATAMODELS_AUTH on, the
annotator is the signed-in user (reviewers and admins vote; viewers cannot) and `?annotator=` changes
nothing; on a local dashboard without auth the annotator types a name, kept in the URL (`?annotator=`).
What they have reviewed is in the database, so a reload resumes the queue. An annotator sees and undoes
only their own votes here.
"""
import streamlit as st

from backend.datasets import thumbnails
from backend.leakage.annotations import AnnotationStoreError, AnnotatorNameError, shared_store, validate_name
from backend.store.rows import read_row
from backend.leakage.analysis import load_candidates, review_candidates
from pages import components

N_SHOWN = 5
N_COLS = 5
SHORTCUTS = {"submit": "S", "skip": "K", "undo": "U"}
# Candidate groups in the order shown, with what each source means.
SOURCES = {"top weight": "", "bottom weight": "", "features": " (nearest in the control model's features)",
           "pixels": " (nearest in pixels, at the best shift by up to a pixel)"}

run = components.current_run()
user = components.current_user()
candidates = load_candidates(run)
st.title("Review leak candidates")
try:
    store = shared_store()
except AnnotationStoreError as exc:
    st.error(components.hide_paths(exc))
    st.stop()


def identify() -> None:
    try:
        name = validate_name(st.session_state["annotator_input"])
        store.annotator_id(name)
    except (AnnotatorNameError, AnnotationStoreError) as exc:
        st.session_state["review_error"] = str(exc)
        return
    st.session_state["annotator"] = name
    st.query_params["annotator"] = name


def sign_out() -> None:
    st.session_state.pop("annotator", None)
    st.query_params.pop("annotator", None)


if user.authenticated:
    if not user.can("vote"):
        st.error(f"Voting needs the reviewer or admin role; you are {components.plain(user.name)} ({user.role}). "
                 "Leakage results shows the scores so far.")
        st.stop()
    # The login is the identity: a name in the URL or the session changes nothing.
    st.session_state["annotator"] = user.name
    st.query_params.pop("annotator", None)
elif "annotator" not in st.session_state and st.query_params.get("annotator"):
    try:
        st.session_state["annotator"] = validate_name(st.query_params["annotator"])
    except AnnotatorNameError as exc:
        st.session_state["review_error"] = str(exc)
        st.query_params.pop("annotator")

if st.session_state.get("review_error"):
    st.error(components.hide_paths(st.session_state.pop("review_error")))

annotator = st.session_state.get("annotator")
if annotator is None:
    st.write("Type your name to start. Your votes are stored under it; the link of this page brings you back to your queue.")
    st.text_input("Your name", key="annotator_input", max_chars=64)
    st.button("Start reviewing", key="identify", on_click=identify, type="primary")
    st.stop()

# Names are shown as plain text only (st.text, dataframe cells): markup in a name never renders.
top = st.columns([4, 1])
top[0].text(f"Reviewing as: {annotator}")
if not user.authenticated:
    top[1].button("Change annotator", key="sign_out", on_click=sign_out)

try:
    reviewed = store.reviewed(run.name, annotator)
except AnnotationStoreError as exc:
    st.error(components.hide_paths(exc))
    st.stop()
queue = [int(j) for j in candidates.queue]
done = sum(j in reviewed for j in queue)
st.progress(done / len(queue), text=f"{done} of {len(queue)} test images reviewed")
focus = st.session_state.get("review_focus")
pending = [j for j in queue if j not in reviewed]
if not pending:
    st.success("You have reviewed every test image of this run. Undo brings back the last one.")
test = focus if focus in pending else (pending[0] if pending else None)


def toggle_key(test: int, train: int) -> str:
    return f"vote-{run.name}-{test}-{train}"


def submit(test: int, trains: list[int]) -> None:
    decisions = {t: bool(st.session_state.get(toggle_key(test, t), False)) for t in trains}
    try:
        n = store.submit(run.name, test, annotator, decisions)
    except AnnotationStoreError as exc:
        st.session_state["review_error"] = f"{exc} Your choices are still on screen: submit again."
        return
    st.session_state.pop("review_focus", None)
    st.session_state["review_notice"] = f"Saved {n} votes on test:{test}."


def skip(test: int) -> None:
    try:
        store.skip(run.name, test, annotator)
    except AnnotationStoreError as exc:
        st.session_state["review_error"] = str(exc)
        return
    st.session_state.pop("review_focus", None)
    st.session_state["review_notice"] = f"Skipped test:{test}."


def undo() -> None:
    try:
        undone = store.undo_last(run.name, annotator)
    except AnnotationStoreError as exc:
        st.session_state["review_error"] = str(exc)
        return
    if undone is None:
        st.session_state["review_notice"] = "Nothing to undo."
        return
    test, votes = undone
    for train, is_leak in votes.items():
        st.session_state[toggle_key(test, train)] = is_leak
    st.session_state["review_focus"] = test
    st.session_state["review_notice"] = f"Undid test:{test}: correct it and submit again."


buttons = st.columns(3)
if st.session_state.get("review_notice"):
    st.caption(st.session_state.pop("review_notice"))
if test is not None:
    shown = review_candidates(run, candidates, test, n=N_SHOWN)
    trains = [c.train for c in shown]
    buttons[0].button("Submit", key="submit", type="primary", on_click=submit, args=(test, trains),
                      shortcut=SHORTCUTS["submit"], help="Save the toggles (unmarked = not a duplicate) and go on")
    buttons[1].button("Skip", key="skip", on_click=skip, args=(test,), shortcut=SHORTCUTS["skip"],
                      help="Leave this test image without votes and go on")
buttons[2].button("Undo last", key="undo", on_click=undo, shortcut=SHORTCUTS["undo"],
                  help="Bring back the test image you submitted or skipped last")
if test is None:
    st.stop()

column = run.n_train + test
left, right = st.columns([1, 3])
left.image(thumbnails.upscale(read_row(run.images, column), 256),
           caption=f"test:{test} · label {components.label_of(run, column)} · queue score {candidates.queue_score[test]:.3f}")
with right:
    st.caption("Mark every training image that shows the same scene or a near duplicate of the test image. "
               "w: its datamodel weight · cos: feature cosine · px: pixel correlation at the best shift.")
    for source, note in SOURCES.items():
        group = [c for c in shown if c.source == source]
        if not group:
            continue
        st.markdown(f"**{source.capitalize()}**" + note)
        slots = st.columns(N_COLS)
        for i, c in enumerate(group):
            with slots[i % N_COLS]:
                st.image(thumbnails.upscale(read_row(run.images, c.train), components.THUMB),
                         caption=f"train:{c.train} · {components.label_of(run, c.train)} · w {c.weight:+.3f} · "
                                 f"cos {c.similarity:.3f} · px {c.pixel:.3f}")
                st.toggle("same scene / near duplicate", key=toggle_key(test, c.train), wrap=True)

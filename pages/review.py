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

from backend.api import AnnotationStoreError, AnnotatorNameError, RunAPI, validate_name
from widgets import access, image_grid, run_context, selection_actions, text

N_SHOWN = 5
N_COLS = 5
SHORTCUTS = {"submit": "S", "none": "N", "skip": "K", "undo": "U"}
# One key per candidate, in the order shown: digits, then letters neither the actions above nor Streamlit
# (C clears the cache, R reruns) use.
MARK_KEYS = "1234567890QWETYIOPADFGHJLZXVBM"
# Candidate groups in the order shown: (title, its one-line caption, the candidate sources in it).
GROUPS = [("Datamodel", "largest positive and negative weights in the test image's datamodel",
           ("top weight", "bottom weight"), lambda c: f"w {c.weight:+.3f}"),
          ("Features", "nearest in the control model's penultimate features", ("features",),
           lambda c: f"cos {c.feature_similarity:.3f}"),
          ("Pixels", "nearest in pixels, at the best shift by up to a pixel", ("pixels",),
           lambda c: f"px {c.pixel_correlation:.3f}")]

run = run_context.current_run()
api = RunAPI(run)
user = access.current_user()
queue_scores = dict(api.leak_queue())
st.title("Review leak candidates")
try:
    store = api.annotations()
except AnnotationStoreError as exc:
    st.error(text.hide_paths(exc))
    st.stop()


def identify() -> None:
    try:
        name = store.sign_in(st.session_state["annotator_input"])
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
        st.error(f"Voting needs the reviewer or admin role; you are {text.plain(user.name)} ({user.role}). "
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
    st.error(text.hide_paths(st.session_state.pop("review_error")))

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
    reviewed, skipped = store.reviewed(annotator), store.skipped(annotator)
except AnnotationStoreError as exc:
    st.error(text.hide_paths(exc))
    st.stop()
queue = list(queue_scores)
tag, tagged = selection_actions.tag_filter(run, key="review_tag")
if tagged is not None:  # review the tag's test images only, in the queue's order
    names = {api.name(int(c)) for c in tagged}
    queue = [j for j in queue if j in names]
    if not queue:
        st.info(f"No test image in this run's queue is tagged {text.plain(tag)}.")
        st.stop()
# Reviewed = submitted votes, as on the Leakage results page; skips leave the queue but are counted apart.
done = sum(j in reviewed for j in queue)
n_skipped = sum(j in skipped for j in queue)
st.progress(done / len(queue), text=f"{done} of {len(queue)} test images reviewed"
            + (f" · {n_skipped} skipped" if n_skipped else ""))
focus = st.session_state.get("review_focus")
pending = [j for j in queue if j not in reviewed and j not in skipped]
if not pending:
    st.success("Every test image of this run is reviewed or skipped. Undo brings back the last one.")
test = focus if focus in pending else (pending[0] if pending else None)


def toggle_key(test: str, train: str) -> str:
    """Session key of the mark on one candidate (True = a near duplicate), set by its button."""
    return f"vote-{run.name}-{test}-{train}"


def flip(test: str, train: str) -> None:
    st.session_state[toggle_key(test, train)] = not st.session_state.get(toggle_key(test, train), False)


def submit(test: str, trains: list[str], none: bool = False) -> None:
    """Save the marks (unmarked = not a duplicate); with `none`, every candidate as not a duplicate."""
    decisions = {t: not none and bool(st.session_state.get(toggle_key(test, t), False)) for t in trains}
    try:
        n = store.submit(test, annotator, decisions)
    except AnnotationStoreError as exc:
        st.session_state["review_error"] = f"{exc} Your choices are still on screen: submit again."
        return
    st.session_state.pop("review_focus", None)
    st.session_state["review_notice"] = (f"Saved {n} votes on {test}" + (": none are duplicates." if none else "."))


def skip(test: str) -> None:
    try:
        store.skip(test, annotator)
    except AnnotationStoreError as exc:
        st.session_state["review_error"] = str(exc)
        return
    st.session_state.pop("review_focus", None)
    st.session_state["review_notice"] = f"Skipped {test}."


def undo() -> None:
    try:
        undone = store.undo_last(annotator)
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
    st.session_state["review_notice"] = f"Undid {test}: correct it and submit again."


if st.session_state.get("review_notice"):
    st.caption(st.session_state.pop("review_notice"))
# Compact, so that more than the first candidate group is in view at 1280x800: the test image and the actions
# stacked on the left, the candidates in five columns of small thumbnails on the right.
left, right = st.columns([1, 3.5])
if test is not None:
    column = api.column(test)
    left.image(image_grid.large_image(run, column, 256), width=128,
               caption=f"{test} · label {run_context.label_of(run, column)} · queue score {queue_scores[test]:.3f}")
    shown = api.leak_candidates(test, n=N_SHOWN)
    trains = [c.train for c in shown]
    left.button("Submit", key="submit", type="primary", on_click=submit, args=(test, trains), width="stretch",
                shortcut=SHORTCUTS["submit"], help="Save the marks (unmarked = not a duplicate) and go on")
    left.button("None are duplicates", key="none", on_click=submit, args=(test, trains, True), width="stretch",
                shortcut=SHORTCUTS["none"], help="Vote every candidate not a duplicate and go on")
    left.button("Skip", key="skip", on_click=skip, args=(test,), shortcut=SHORTCUTS["skip"], width="stretch",
                help="Leave this test image without votes and go on (a skip is not a review)")
left.button("Undo last", key="undo", on_click=undo, shortcut=SHORTCUTS["undo"], width="stretch",
            help="Bring back the test image you submitted or skipped last")
if test is None:
    st.stop()

with right:
    st.caption("Mark each near duplicate of the test image (or the same scene): click it or press its key.")
    keys = dict(zip(trains, MARK_KEYS))
    for title, caption, sources, score in GROUPS:
        group = [c for c in shown if c.source in sources]
        if not group:
            continue
        st.markdown(f"**{title}** · {caption}")
        slots = st.columns(N_COLS, gap="xxsmall")
        for i, c in enumerate(group):
            marked = bool(st.session_state.get(toggle_key(test, c.train), False))
            with slots[i % N_COLS]:
                # a small thumbnail, its caption as wide as the column (an image caption is as wide as the image)
                st.image(image_grid.large_image(run, api.column(c.train), image_grid.THUMB), width=64)
                st.caption(f"{c.train} · label {run_context.label_of(run, api.column(c.train))} · {score(c)}")
                st.button("duplicate", key=f"mark-{run.name}-{test}-{c.train}",
                          icon=":material/check_box:" if marked else ":material/check_box_outline_blank:",
                          type="primary" if marked else "secondary", on_click=flip, args=(test, c.train),
                          shortcut=keys.get(c.train), help="Same scene / near duplicate of the test image (its key "
                          "is on the button)", width="stretch")

"""Leakage results: annotation scores, leakage scores (the paper's Fig. 11), agreement, and exports.

A pair's annotation score is the fraction of its annotators who marked it a near duplicate; a test
image's leakage score is the largest over its candidates (Ilyas et al. 2022, Sec. 4.3). Agreement is
Fleiss' κ over all pairs and Cohen's κ for each pair of annotators (backend/agreement.py). Scores are for
everyone; who voted what (the per-annotator tables and the export of everyone's votes) is for admins,
and anyone else exports only their own votes.
"""
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend import target_table
from backend.api import VOTE_EXPORT_COLUMNS, AnnotationStoreError, RunAPI, leakage_scores
from widgets import access, image_grid, run_context, selection_actions, text

MAX_PAIRS_SHOWN = 24

run = run_context.current_run()
api = RunAPI(run)
user = access.current_user()
st.title(f"Leakage results · {run.name}")
try:
    store = api.annotations()
    votes = store.votes()
    skipped = store.skip_counts()
except AnnotationStoreError as exc:
    st.error(text.hide_paths(exc))
    st.stop()
kept = [v for v in votes if store.in_run(v)]
stray = [v for v in votes if not store.in_run(v)]
if stray:  # the database is shared and written by other servers: its pairs are checked against this run
    st.error(f"The annotation database holds {len(stray)} vote{'s' if len(stray) != 1 else ''} on run "
             f"{text.plain(run.name)} for images it does not have (e.g. {stray[0].test}, "
             f"{stray[0].train}; the run has {run.n_test} test and {run.n_train} training images): they are "
             "left out below. Were they cast on another run of the same name?")
    votes = kept
if not votes:
    st.info(f"No votes on run {run.name} yet: annotators vote on the Review page.")
    st.stop()

found = leakage_scores(votes)
names, tests, leakage = found.annotators, found.tests, found.leakage
scores = pd.DataFrame(found.records())  # one row per pair: test and train positions, counts, scores, names

fleiss = found.fleiss
a, b, c, d = st.columns(4)
a.metric("Annotators", len(names))
b.metric("Test images reviewed", len(tests))
c.metric("Pairs voted", len(scores))
d.metric("Fleiss' κ", f"{fleiss:.3f}" if np.isfinite(fleiss) else "—",
         help="Agreement of all annotators beyond chance, on the pairs two or more of them voted on")

st.subheader("Leakage score per test image", help="Largest annotation score over each test image's candidates (paper Fig. 11)")
figure = go.Figure(go.Histogram(x=leakage, xbins=dict(start=-0.05, end=1.05, size=0.1), marker_color="#1565c0"))
figure.update_layout(xaxis_title="leakage score", yaxis_title="test images", xaxis_range=[-0.05, 1.05], height=300,
                     margin=dict(t=10, b=40), bargap=0.05)
st.plotly_chart(figure, key="leakage-histogram")

st.subheader("Pairs by annotation score")
left, right = st.columns([2, 1])
levels = [float(x) for x in np.unique(np.round(found.pairs.score, 6))]
level = levels[0] if len(levels) == 1 else left.select_slider(
    "Annotation score", options=levels, value=levels[-1], format_func=lambda x: f"{x:.2f}", key="score_level")
conflicts_only = right.checkbox("Conflicts only", key="conflicts_only",
                                help="Pairs some but not all of their annotators marked as near duplicates")
chosen = scores[np.isclose(scores["annotation_score"], level) & (scores["conflict"] | (not conflicts_only))]
tag, tagged = selection_actions.tag_filter(run, key="results_tag")
if tagged is not None:  # the pairs with a tagged image, test or train
    chosen = chosen[chosen["train"].isin(tagged) | (chosen["test"] + run.n_train).isin(tagged)]
st.caption(f"{len(chosen)} pair(s) at score {level:.2f}" + (" with conflicting votes" if conflicts_only else "")
           + (f" with an image tagged {text.plain(tag)}" if tag else "")
           + (f"; showing the first {MAX_PAIRS_SHOWN}" if len(chosen) > MAX_PAIRS_SHOWN else ""))
slots = st.columns(4)
for i, row in enumerate(chosen.head(MAX_PAIRS_SHOWN).itertuples()):
    test_name = row.test_name
    with slots[i % 4]:
        pair = np.concatenate([image_grid.large_image(run, api.column(test_name), 96),
                               image_grid.large_image(run, api.column(row.train_name), 96)], axis=1)
        st.image(pair, caption=f"{test_name} | {row.train_name} · {row.marked}/{row.annotators} marked")
        st.page_link("pages/neighbours.py", label=f"Neighbours of {test_name}", query_params={"run": run.name, "target": test_name})
        st.page_link("pages/counterfactuals.py", label="Counterfactual", query_params={"run": run.name, "target": test_name})

st.subheader("Agreement")
kappa, overlap = found.cohen, found.overlap
if not user.can("export"):
    st.caption("Who voted what is shown to admins only.")
voted_tests = {name: len({v.test for v in votes if v.annotator == name}) for name in names}
if user.can("export"):
    st.dataframe(pd.DataFrame({"annotator": names, "test images submitted": [voted_tests[n] for n in names],
                           "pairs voted": np.diag(overlap), "skipped": [skipped.get(n, 0) for n in names]}),
                 hide_index=True, key="per-annotator")
if user.can("export") and len(names) > 1:
    st.caption("Cohen's κ of each pair of annotators on the pairs both voted on (items in common in brackets)")
    cells = [[f"{kappa[i, j]:.2f} ({overlap[i, j]})" if np.isfinite(kappa[i, j]) else f"— ({overlap[i, j]})"
              for j in range(len(names))] for i in range(len(names))]
    st.dataframe(pd.DataFrame(cells, index=names, columns=names), key="pairwise-kappa")

st.subheader("Export")
# Admins export everyone's votes; anyone else their own (on a local dashboard the one user is an admin).
exported = votes if user.can("export") else [v for v in votes if v.annotator == user.name]
vote_rows = pd.DataFrame([v.record(run.name) for v in exported], columns=list(VOTE_EXPORT_COLUMNS))
label = "Votes" if user.can("export") else "Your votes"
safe = vote_rows.assign(annotator=[target_table.inert_cell(n) for n in vote_rows["annotator"]])
e1, e2, e3, e4 = st.columns(4)
e1.download_button(f"{label} (CSV)", safe.to_csv(index=False), file_name=f"{run.name}-votes.csv",
                  mime="text/csv", key="votes-csv")
e2.download_button(f"{label} (JSON)", json.dumps([v.record(run.name) for v in exported], indent=1),
                   file_name=f"{run.name}-votes.json", mime="application/json", key="votes-json")
e3.download_button("Scores (CSV)", scores.to_csv(index=False),
                   file_name=f"{run.name}-scores.csv", mime="text/csv", key="scores-csv")
e4.download_button("Scores (JSON)", json.dumps({"pairs": found.records(), "test_images": found.image_records()}, indent=1),
                   file_name=f"{run.name}-scores.json", mime="application/json", key="scores-json")

"""PCA: the principal components of datamodel embeddings, what they pick out, and whether they are real.

Ilyas et al. 2022, §4.3 and Fig. 14: the targets at either end of a component share a feature the
models rely on; App. J: removing the training examples at one end of it moves exactly those targets.
"""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from backend.api import FAITHFULNESS_MODELS, RunAPI
from widgets import access, image_grid, run_context, selection_actions, text, url_state

NEIGHBOURS_PAGE = "pages/neighbours.py"
GROUP_NAMES = {"positive": "most positive projections", "negative": "most negative projections", "all": "whole test set"}


@st.cache_data(max_entries=4, show_spinner=False)
def _stored_checks(_api, path: str, version: int) -> list[dict]:
    """Cached per run directory and version of its retrain folder: listing the checks reads every retrain's
    summary (1.5–1.9 s for the digits run's 3,683 retrains, on every PCA view before)."""
    return _api.faithfulness_checks()


def columns(names: list[str]) -> np.ndarray:
    """The margins columns of target names (the grids take columns)."""
    return np.array([api.column(n) for n in names], dtype=np.int64)


run = run_context.current_run()
api = RunAPI(run)
comps, projections = api.pca()
datamodel_ratio, representation_ratio = api.explained_ratios()
summary = api.structure_summary()

st.title("Principal components of datamodel embeddings")
st.caption("Each target's datamodel, scaled to unit norm, is its embedding; the PCA is fit on the training "
           f"targets' embeddings ({summary.get('pca', {}).get('fit_targets', run.n_train):,} of them).")

st.subheader("Explained variance", help="Cumulative share of variance explained by the leading components. "
             "Representation baseline: penultimate-layer features of a model trained on the whole training set.")
chart = go.Figure()
chart.add_trace(go.Scatter(x=np.arange(1, len(datamodel_ratio) + 1), y=np.cumsum(datamodel_ratio),
                           mode="lines+markers", name="datamodel embeddings"))
if representation_ratio is not None:
    chart.add_trace(go.Scatter(x=np.arange(1, len(representation_ratio) + 1), y=np.cumsum(representation_ratio),
                               mode="lines+markers", name="representation baseline"))
chart.update_layout(xaxis_title="components", yaxis_title="cumulative explained variance", yaxis_range=[0, 1.02],
                    height=320, margin=dict(t=10, b=40))
st.plotly_chart(chart, key="explained-variance")
if "effective_dimensionality" in summary:
    st.caption(summary["effective_dimensionality"])

pc = st.selectbox("Component", range(len(comps)), format_func=lambda c: f"PC {c} · {datamodel_ratio[c]:.2%} of variance",
                  key="pca_component", **url_state.url_int("pc", "pca_component", range(len(comps)), 0))
k = st.slider("Images per grid", min_value=1, max_value=36, value=12, key="pca_k")
tag, tagged = selection_actions.tag_filter(run, key="pca_tag")
coordinates = np.asarray(projections[:, pc])
component = np.asarray(comps[pc])

# Tabs of side-by-side grids: the two ends of the component are compared at a glance, on one screen; only the
# open tab is drawn.
test_tab, train_tab, coordinates_tab = url_state.lazy_tabs(["Test targets", "Training targets",
                                                             "Training-image coordinates"], key="pca_tab")
for tab, split in ((test_tab, "test"), (train_tab, "train")):
    if not tab.open:
        continue
    top, bottom = (columns(end) for end in api.pc_extremes(pc, k, among=split, tagged=tagged))
    positive_side, negative_side = tab.columns(2)
    with positive_side:
        st.subheader(f"{split.capitalize()} targets projecting most positively onto PC {pc}")
        image_grid.image_grid(run, top, [f"proj {coordinates[j]:+.3f}" for j in top],
                              key=f"{split}-top", page=NEIGHBOURS_PAGE, n_cols=3)
    with negative_side:
        st.subheader(f"{split.capitalize()} targets projecting most negatively onto PC {pc}")
        image_grid.image_grid(run, bottom, [f"proj {coordinates[j]:+.3f}" for j in bottom],
                              key=f"{split}-bottom", page=NEIGHBOURS_PAGE, n_cols=3)

if coordinates_tab.open:
    top, bottom = (columns(end) for end in api.pc_extremes(pc, k, among="coordinates", tagged=tagged))
    positive_side, negative_side = coordinates_tab.columns(2)
    with positive_side:
        st.subheader(f"Training images with the largest coordinates of PC {pc}",
                     help="The training examples the component's positive side depends on: removing them is the "
                          "faithfulness check below")
        image_grid.image_grid(run, top, [f"coord {component[j]:+.4f}" for j in top], key="coord-top",
                              page=NEIGHBOURS_PAGE, n_cols=3)
    with negative_side:
        st.subheader(f"Training images with the most negative coordinates of PC {pc}")
        image_grid.image_grid(run, bottom, [f"coord {component[j]:+.4f}" for j in bottom], key="coord-bottom",
                              page=NEIGHBOURS_PAGE, n_cols=3)

st.header("Is the component faithful? (App. J)")
st.caption("Remove the k training examples at one end of the component, retrain models on the rest, and compare "
           "their margins with control models trained on everything. Removing the positive end should lower the "
           "targets that project most positively and raise those that project most negatively, while the test set "
           "as a whole barely moves. Every retrained model is stored in the run.")
left, right = st.columns(2)
k_removed = text.clamped_int(left, "Training examples removed per side (k)", 1, run.n_train - 1,
                                   min(40, run.n_train - 1), key="faith_k")
n_models = text.clamped_int(right, "Models per removal set", 1, 256, FAITHFULNESS_MODELS, key="faith_models")
todo = api.faithfulness_to_train(pc, int(k_removed), n_models=int(n_models))
result = None
if todo == 0:
    result = api.faithfulness(pc, int(k_removed), n_models=int(n_models))
elif st.button(f"Retrain {todo} models", key="faith_run", type="primary", disabled=not access.can_retrain(),
               help="Trains the missing control models and retrained models, then stores them in the run "
                    "(admins only, within the run's budget of models, DATAMODELS_RETRAIN_BUDGET)"):
    with access.retraining_job(run, todo):
        bar = run_context.StreamlitProgress("training")
        result = api.faithfulness(pc, int(k_removed), n_models=int(n_models), progress=bar)
        bar.empty()
else:
    st.info(f"{todo} models must be trained for this request (stored results are shown without retraining).")

if result is not None:
    groups = list(GROUP_NAMES)
    bars = go.Figure([go.Bar(name=f"removed the {side} end", x=[GROUP_NAMES[g] for g in groups],
                             y=[result["sides"][side]["shift"][g] for g in groups]) for side in result["sides"]])
    bars.update_layout(barmode="group", yaxis_title="mean margin change vs control", height=340, margin=dict(t=10, b=40))
    st.plotly_chart(bars, key="faith-bars")
    st.caption(f"{result['n_models']} retrained models per side against {result['n_control']} control models; "
               f"groups of {result['n_group']} test targets.")
    with st.expander("Removed training images"):
        for side, info in result["sides"].items():
            st.markdown(f"**{side.capitalize()} end** ({len(info['removed'])} images)")
            removed = columns(info["removed"])
            image_grid.image_grid(run, removed, [f"{component[j]:+.4f}" for j in removed], key=f"removed-{side}", n_cols=10)

stored = _stored_checks(api, str(run.dir), api.retrains_version())
if stored:
    with st.expander(f"Stored retrains ({len(stored)})"):
        st.dataframe([{"PC": s["pc"], "k": s["k"], "side": s["side"], "models": s["n_models"],
                       "matches current PCA": s["current"], "file": s["file"]} for s in stored], hide_index=True)
st.caption(f"Command line: `python -m precompute faithfulness --run {text.hide_paths(run.dir)} --pc {pc} --k {int(k_removed)}`")

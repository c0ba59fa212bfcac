"""Neighbours: one target's datamodel, the training images that most raise and most lower its margin."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from backend.api import RunAPI
from backend.attribution import store
from backend.datasets import thumbnails
from backend.store.rows import read_row
from backend.datamodels.queries import fitted_targets, sparsity, top_weights, weight_profile
from backend.store.targets import target_name
from widgets import image_grid, run_context, similar_images, target_picker, text, url_state

run = run_context.current_run()
api = RunAPI(run)
weights, bias, lam = run_context.require_datamodels(run)
mean_margin, accuracy = run_context.margin_summary(run)
column = url_state.current_target(run)
name = target_name(column, run.n_train)

st.title(f"Neighbours of {name}")
with st.expander("Choose a target", expanded=False):
    target_picker.target_picker(run, column)

row = read_row(weights, column)
fitted = bool(fitted_targets(lam)[column])
left, right = st.columns([1, 3])
left.image(thumbnails.upscale(read_row(run.images, column), 224), caption=" · ".join(
    f for f in (name, f"label {run_context.label_of(run, column)}", run_context.predicted_text(run, column)) if f))
with right:
    a, b, c = st.columns(3)
    a.metric("Label", run_context.label_of(run, column))
    predicted = run_context.majority(run)
    # The class is the value and its share the (grey, arrowless) delta: both in the value were cut at 1400 px.
    b.metric("Majority prediction", "—" if predicted is None else run.class_names[int(predicted[0][column])],
             delta=None if predicted is None else f"{predicted[1][column]:.0%} of models", delta_color="off",
             delta_arrow="off",
             help=None if predicted is None else "The class most models predict, and the share of models predicting it")
    c.metric("Accuracy over models", f"{accuracy[column]:.1%}")
    a.metric("Mean margin over models", f"{mean_margin[column]:+.3f}")
    b.metric("Datamodel bias", f"{bias[column]:+.3f}" if fitted else "—")
    c.metric("Nonzero weights", f"{sparsity(row)} / {run.n_train}")
    a.metric("LASSO λ", f"{lam[column]:.2e}" if fitted else "—")
run_context.require_fitted(run, lam, column)


@text.fragment
def ranked_images() -> None:
    """The grids of top weights and method scores: a change of k reruns them alone (st.fragment), not the page."""
    k = st.slider("Images per grid (k)", min_value=1, max_value=48, value=12, key="k")
    positive, negative = top_weights(row, k)
    # Side by side, as on the PCA page: both ends of the datamodel start on the first 1400 x 900 screen.
    positive_side, negative_side = st.columns(2)
    with positive_side:
        st.subheader("Top positive weights", help="Training images whose inclusion most raises the target's margin")
        image_grid.image_grid(run, positive, [f"w {row[j]:+.4f}" for j in positive], key="positive", n_cols=3)
    with negative_side:
        st.subheader("Top negative weights", help="Training images whose inclusion most lowers the target's margin")
        image_grid.image_grid(run, negative, [f"w {row[j]:+.4f}" for j in negative], key="negative", n_cols=3)

    methods = store.available(run)
    if methods and column >= run.n_train:
        st.subheader("Top positive scores by attribution method",
                     help="Training images each method says most raise the target's margin (the Methods page compares them)")
        one, every = url_state.lazy_tabs(["One method", "Every method side by side"], key="methods_view")
        if one.open:
            with one:
                default = "datamodels" if "datamodels" in methods else methods[0]
                picked = st.selectbox("Method", methods, key="method",
                                      **url_state.url_choice("method", "method", methods, default))
                scores = api.scores(name, picked)
                top = top_weights(scores, k)[0]
                image_grid.image_grid(run, top, [f"s {scores[j]:+.4f}" for j in top], key=f"method-{picked}")
        if every.open:
            with every:
                for slot, method in zip(st.columns(len(methods)), methods):
                    with slot:
                        st.markdown(f"**{method}**")
                        scores = api.scores(name, method)
                        best = top_weights(scores, k)[0]
                        image_grid.image_grid(run, best, [f"s {scores[j]:+.4f}" for j in best], key=f"side-{method}",
                                              n_cols=2)
    elif methods:
        st.caption("Attribution methods score test targets only: pick a test target to compare them.")


ranked_images()
similar_images.similar_images(api, name)


def open_clicked(key: str) -> None:
    clicked = image_grid.selected_customdata(st.session_state[key])  # a bar's customdata is its training image
    if clicked:
        url_state.set_target(target_name(clicked[0], run.n_train))


st.subheader("Weight profile", help="Nonzero weights sorted from most positive to most negative; click a bar to open that image")
indices, values = weight_profile(row)
rank = np.arange(len(values))
# One trace per sign: a per-bar colour array makes plotly validate every bar (7x slower at 2,000 bars).
profile = go.Figure([go.Bar(x=rank[side], y=values[side], customdata=indices[side].tolist(), marker_color=colour,
                            hovertemplate="train:%{customdata}<br>w = %{y:.4f}<extra></extra>")
                     for side, colour in ((values > 0, "#2e7d32"), (values < 0, "#c62828"))])
profile.update_layout(xaxis_title="rank", yaxis_title="weight", height=320, margin=dict(t=10, b=40), bargap=0,
                      showlegend=False)
key = f"profile-{name}"
st.plotly_chart(profile, key=key, on_select=lambda: open_clicked(key), selection_mode="points")
st.caption(f"{len(values)} of {sparsity(row)} nonzero weights shown")

"""Neighbours: one target's datamodel, the training images that most raise and most lower its margin."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from backend.api import DATAMODELS, RunAPI
from widgets import image_grid, run_context, selection_actions, similar_images, target_picker, text, url_state

run = run_context.current_run()
api = RunAPI(run)
weights, bias, lam = run_context.require_datamodels(run)
mean_margin, accuracy = run_context.margin_summary(run)
column = url_state.current_target(run)
name = api.name(column)

st.title(f"Neighbours of {name}")
with st.expander("Choose a target", expanded=False):
    target_picker.target_picker(run, column)

row = api.scores(name)
fitted = api.is_fitted(name)
left, right = st.columns([1, 3])
left.image(image_grid.large_image(run, column, 224), caption=" · ".join(
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
    c.metric("Nonzero weights", f"{api.nonzero_weights(name)} / {run.n_train}")
    a.metric("LASSO λ", f"{lam[column]:.2e}" if fitted else "—")
run_context.require_fitted(run, column)


tag, tagged = selection_actions.tag_filter(run, key="neighbours_tag")


def top_columns(method: str, k: int, side: str = "positive") -> list[int]:
    """The columns of the target's top k training images by `method` (the grids take columns), the tag's only if
    one is chosen."""
    return [api.column(image) for image in api.top(name, k, method=method, side=side, among=tagged)]


@text.fragment
def ranked_images() -> None:
    """The grids of top weights and method scores: a change of k reruns them alone (st.fragment), not the page."""
    k = st.slider("Images per grid (k)", min_value=1, max_value=48, value=12, key="k")
    positive, negative = (top_columns(DATAMODELS, k, side) for side in ("positive", "negative"))
    # Side by side, as on the PCA page: both ends of the datamodel start on the first 1400 x 900 screen.
    positive_side, negative_side = st.columns(2)
    with positive_side:
        st.subheader("Top positive weights", help="Training images whose inclusion most raises the target's margin")
        image_grid.image_grid(run, positive, [f"w {row[j]:+.4f}" for j in positive], key="positive", n_cols=3)
    with negative_side:
        st.subheader("Top negative weights", help="Training images whose inclusion most lowers the target's margin")
        image_grid.image_grid(run, negative, [f"w {row[j]:+.4f}" for j in negative], key="negative", n_cols=3)

    methods = api.stored_methods()
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
                top = top_columns(picked, k)
                image_grid.image_grid(run, top, [f"s {scores[j]:+.4f}" for j in top], key=f"method-{picked}")
        if every.open:
            with every:
                for slot, method in zip(st.columns(len(methods)), methods):
                    with slot:
                        st.markdown(f"**{method}**")
                        scores = api.scores(name, method)
                        best = top_columns(method, k)
                        image_grid.image_grid(run, best, [f"s {scores[j]:+.4f}" for j in best], key=f"side-{method}",
                                              n_cols=2)
    elif methods:
        st.caption("Attribution methods score test targets only: pick a test target to compare them.")


ranked_images()
similar_images.similar_images(api, name, among=tagged)


def open_clicked(key: str) -> None:
    clicked = image_grid.selected_customdata(st.session_state[key])  # a bar's customdata is its training image
    if clicked:
        url_state.set_target(api.name(clicked[0]))


st.subheader("Weight profile", help="Nonzero weights sorted from most positive to most negative; click a bar to open that image")
images, values = api.weight_profile(name)
indices = np.array([api.column(image) for image in images], dtype=np.int64)
rank = np.arange(len(values))
# One trace per sign: a per-bar colour array makes plotly validate every bar (7x slower at 2,000 bars).
profile = go.Figure([go.Bar(x=rank[side], y=values[side], customdata=indices[side].tolist(), marker_color=colour,
                            hovertemplate="train:%{customdata}<br>w = %{y:.4f}<extra></extra>")
                     for side, colour in ((values > 0, "#2e7d32"), (values < 0, "#c62828"))])
profile.update_layout(xaxis_title="rank", yaxis_title="weight", height=320, margin=dict(t=10, b=40), bargap=0,
                      showlegend=False)
key = f"profile-{name}"
st.plotly_chart(profile, key=key, on_select=lambda: open_clicked(key), selection_mode="points")
st.caption(f"{len(values)} of {api.nonzero_weights(name)} nonzero weights shown")

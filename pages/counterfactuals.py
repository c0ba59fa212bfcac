"""Counterfactuals: remove training images, read the datamodels' prediction, then retrain to check it.

The basket (a set of training images) lives in the URL, as a compact id list; predictions, retraining, the log and
data support are calls of the public API (backend.api.RunAPI), by target names.
"""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.api import CONTROL_MODELS, SUPPORT_STEPS, RemovalError, RunAPI
from widgets import access, image_grid, run_context, selection_actions, target_picker, text, url_state

N_COLS = 6
RETRAIN_HELP = "Retraining is for admins, within the run's budget of models (DATAMODELS_RETRAIN_BUDGET)"


def request(flag: str) -> None:
    """Button callback: ask for a long action. A flag in the session survives the rerun the shell may
    make before the page draws (run_context.current_run), where a button's return value would not."""
    st.session_state[flag] = True


run = run_context.current_run()
api = RunAPI(run)
run_context.require_datamodels(run)  # a run without them stops here: a RunError naming the fit command
column = url_state.current_target(run)
name = api.name(column)
row = api.scores(name)
train_labels = np.asarray(run.labels[:run.n_train])

st.title(f"Counterfactuals for {name}")
with st.expander("Choose a target", expanded=False):
    target_picker.target_picker(run, column)
run_context.require_fitted(run, column)

if not api.has_control():
    st.info(f"Predictions are measured against control models trained on the full training set; run {run.name} "
            f"has none yet. Train {CONTROL_MODELS} of them once (or `python -m precompute control --run "
            f"{text.hide_paths(run.dir)}`).")
    st.button(f"Train {CONTROL_MODELS} control models", key="cf_build_control", on_click=request,
              args=("cf_control_request",), disabled=not access.can_retrain(), help=RETRAIN_HELP)
    if st.session_state.pop("cf_control_request", False):
        with access.retraining_job(run, CONTROL_MODELS):
            api.train_control(CONTROL_MODELS, progress=run_context.StreamlitProgress("Training control models:"))
        st.rerun()
    st.stop()


@st.cache_data(max_entries=4, show_spinner="Heuristic data support of every test target…")
def _heuristic_supports(_api, path: str, versions: tuple[int, int]) -> np.ndarray:
    """Cached per run directory and per version (mtime) of its weights and control margins."""
    return _api.heuristic_supports()


@st.cache_data(max_entries=16, show_spinner="Predicting every test target…")
def _removal_deltas(_api, path: str, versions: tuple[int, int], removed: tuple[str, ...]) -> np.ndarray:
    """Cached per run directory, version of its weights and control margins, and removal set: every rerun with
    the same basket (any target, any widget) reads nothing; the computation reads all test rows of weights.npy."""
    return _api.removal_deltas(list(removed))


def columns(names: list[str]) -> np.ndarray:
    """The margins columns of target names (the grids and the basket take columns)."""
    return np.array([api.column(n) for n in names], dtype=np.int64)


def top_columns(k: int, side: str, among: np.ndarray | None = None) -> np.ndarray:
    """The target's k strongest positive or negative weights' training images (backend.ranking's rule), among
    `among`'s margins columns (a tag's) if given."""
    return columns(api.top(name, k, side=side, among=among))


control = api.control_margins()


def current_basket() -> list[int]:
    """The removal set being built: the URL's `basket`, a compact id list (3,10-14,7), so a reload, the back
    button or a shared link brings it back."""
    try:
        return api.train_list(st.query_params.get("basket", ""))
    except RemovalError as exc:
        st.warning(f"basket {text.plain(exc)}; starting with an empty basket")
        st.query_params.pop("basket", None)
        return []


def set_basket(items: list[int]) -> None:
    if items:
        st.query_params["basket"] = api.train_list_text(items)
    else:
        st.query_params.pop("basket", None)


def toggle(j: int) -> None:
    items = current_basket()
    set_basket([i for i in items if i != j] if j in items else [*items, j])


def add(ids) -> None:
    items = current_basket()
    set_basket(items + [int(j) for j in ids if int(j) not in items])


basket = current_basket()


def train_grid(ids: np.ndarray, key: str, n_cols: int = N_COLS) -> None:
    """Training images with their weight for the target; clicking one puts it in or takes it out of the basket
    (the framed ones are in it)."""
    image_grid.image_grid(run, ids, [f"w {row[j]:+.4f}" for j in ids], key=key, n_cols=n_cols, on_pick=toggle,
                          marked=basket)


try:
    removed = api.check_removal([api.name(j) for j in basket])
except RemovalError as exc:
    removal_error, removed, prediction = (str(exc) if basket else None), None, None
else:
    removal_error = None
    deltas = _removal_deltas(api, str(run.dir), api.predictions_version(), tuple(removed))
    prediction = api.predict_removal(name, removed, deltas=deltas)

# The target, the basket and its prediction stay in view above the tabs: a click's result lands next to it.
left, right = st.columns([1, 4])
left.image(image_grid.large_image(run, column, 160), caption=f"{name} · label {run_context.label_of(run, column)}")
with right:
    a, b, c, d = st.columns(4)
    a.metric("Label", run_context.label_of(run, column))
    b.metric("Control margin", f"{control[column]:+.3f}", help="Mean margin of the control models (full training set)")
    c.metric("Basket", f"{len(basket)} image{'' if len(basket) == 1 else 's'}")
    if prediction is not None:
        d.metric("Predicted margin", f"{prediction.predicted_margin:+.3f}", f"{prediction.delta:+.3f}",
                 help="Datamodels: removing R changes the margin by −Σ_{i∈R} w (Ilyas et al. 2022, §4.1.2)")
if removal_error is not None:
    st.error(removal_error)

# Only the open tab runs; it is the URL's cf_tab.
build_tab, effect_tab, log_tab, support_tab = url_state.lazy_tabs(
    ["Build the removal set", "Predicted effect · verify", "Every verified removal", "Data support"], key="cf_tab")

if build_tab.open:
    with build_tab:
        k = st.slider("Images per neighbour grid", 1, 48, 12, key="cf_k",
                      help="Click a training image to put it in the basket (framed) or take it out")
        tag, tagged = selection_actions.tag_filter(run, key="cf_tag")
        positive, negative = top_columns(k, "positive", tagged), top_columns(k, "negative", tagged)
        if tagged is not None:  # the grids list the tag's training images only; one click puts them all in the basket
            tagged_train = tagged[tagged < run.n_train]
            st.button(f"+ the {len(tagged_train):,} training images tagged {text.plain(tag)}", key="cf_add_tag",
                      on_click=add, args=(tagged_train,), disabled=len(tagged_train) == 0)
        for side in ("positive", "negative"):
            buttons = st.columns(4)
            for i, n in enumerate((10, 50, 100)):
                buttons[i].button(f"+ top {n} {side}", key=f"cf_{'top' if side == 'positive' else 'bottom'}{n}",
                                  on_click=add, args=(top_columns(n, side),), use_container_width=True)
        buttons[3].button("Clear basket", key="cf_clear", on_click=set_basket, args=([],), use_container_width=True)
        with st.expander("Add images of one class"):
            cls_col, n_col, go_col = st.columns([2, 2, 1])
            cls = cls_col.selectbox("Class", range(len(run.class_names)), format_func=lambda c: run.class_names[c],
                                    key="cf_class")
            members = np.flatnonzero(train_labels == cls)
            count = text.clamped_int(n_col, "How many (largest weight first)", 1, len(members),
                                           min(20, len(members)), key="cf_class_n")
            go_col.button("Add", key="cf_add_class", on_click=add,
                          args=(columns(api.top_in_class(name, cls, int(count))),))
        helps, hurts, in_basket = st.columns([2, 2, 1])
        with helps:
            st.markdown("**Top positive weights** (help the prediction)")
            train_grid(positive, "cf_pos", n_cols=3)
        with hurts:
            st.markdown("**Top negative weights** (hurt the prediction)")
            train_grid(negative, "cf_neg", n_cols=3)
        with in_basket:
            st.markdown("**Basket**")
            if basket:
                ids = np.array(basket)
                st.metric("Σ weights of the basket", f"{row[ids].astype(np.float64).sum():+.4f}")
                st.dataframe(pd.DataFrame({"image": [f"train:{j}" for j in ids],
                                           "label": [run.class_names[y] for y in train_labels[ids]],
                                           "weight": row[ids], "running sum": np.cumsum(row[ids].astype(np.float64))}),
                             hide_index=True, key="cf_basket_table",
                             # a narrow column: the name keeps its full width (train:NNNNN) and stays in view
                             column_config={"image": st.column_config.TextColumn(width=95, pinned=True)})
            else:
                st.caption("The basket is empty: click training images, or add the top 10.")

if effect_tab.open:
    with effect_tab:
        if prediction is None:
            st.caption("Build a removal set first (the first tab): its predicted effect and the retraining that "
                       "checks it are here.")
        else:
            a, b, c = st.columns(3)
            a.metric("Control margin", f"{prediction.control_margin:+.3f}")
            b.metric("Predicted margin", f"{prediction.predicted_margin:+.3f}", f"{prediction.delta:+.3f}")
            c.metric("Prediction flips?", "yes" if prediction.flips else "no")
            chart_side, flipped_side = st.columns(2)
            test_idx = np.arange(run.n_test)
            flipped_columns = columns(prediction.flipped_test)
            flipped = flipped_columns - run.n_train
            test_control = control[run.n_train:]
            test_predicted = test_control + deltas
            colours = np.where(np.isin(test_idx, flipped), "#c62828", "#90a4ae")
            fig = go.Figure(go.Scattergl(x=test_control, y=deltas, mode="markers",
                                         marker=dict(color=colours, size=5), customdata=test_idx,
                                         hovertemplate="test:%{customdata}<br>control %{x:.3f}<br>predicted change "
                                                       "%{y:+.3f}<extra></extra>"))
            # A target flips when its predicted change crosses −(control margin).
            edge = np.array([test_control.min(), test_control.max()])
            fig.add_trace(go.Scatter(x=edge, y=-edge, mode="lines", line=dict(dash="dot", color="grey"), hoverinfo="skip"))
            pad = 0.1 * (np.ptp(deltas) + 1e-3)
            fig.update_layout(xaxis_title="control margin", yaxis_title="predicted margin change (−Σ w)", height=360,
                              showlegend=False, margin=dict(t=10, b=40),
                              yaxis_range=[deltas.min() - pad, deltas.max() + pad])
            chart_side.plotly_chart(fig, key="cf_effect")
            with flipped_side:
                st.markdown(f"**{len(flipped)} test predictions predicted to flip** (red)")
                image_grid.image_grid(run, flipped_columns[:24],
                                      [f"{test_control[j - run.n_train]:+.2f} → "
                                       f"{test_predicted[j - run.n_train]:+.2f}" for j in flipped_columns[:24]],
                                      key="cf_flipped", n_cols=4)

            st.subheader("Verify by retraining")
            n_models = st.slider("Models to retrain", 1, 32, 8, key="cf_models")
            st.button("Verify by retraining", key="cf_verify", type="primary", on_click=request,
                      args=("cf_verify_request",), disabled=not access.can_retrain(), help=RETRAIN_HELP)
            if st.session_state.pop("cf_verify_request", False):
                with access.retraining_job(run, n_models) as job:
                    bar = run_context.StreamlitProgress(f"Training without {len(removed)} images:")
                    found = api.verify(name, removed, n_models=n_models, progress=bar)
                    job.trained = found.trained_now
                bar.finish(f"{found.reused} models from the retrain store, {found.trained_now} trained")
                st.session_state[f"cf_verified:{run.name}"] = found
            verified = st.session_state.get(f"cf_verified:{run.name}")
            if verified is not None and (verified.prediction.target, verified.prediction.removed) == (name, removed):
                a, b, _ = st.columns(3)
                a.metric("Actual margin", f"{verified.actual_margin:+.3f}", f"{verified.actual_delta:+.3f}")
                b.metric("Actually flips?", "yes" if verified.actual_flips else "no")
                st.caption(f"Margins of the {len(verified.margins)} retrained models: "
                           + ", ".join(f"{m:+.2f}" for m in verified.margins))

if log_tab.open:
    with log_tab:
        st.subheader("Predicted vs actual, every verified removal",
                     help="All removal counterfactuals in this run's log (page and cf-eval), as in the paper's Figure 8")
        record = pd.DataFrame(api.verified_removals())
        if len(record):
            stats = api.correlations(record["predicted_delta"], record["actual_delta"])
            names = list(record["target"])
            fig = go.Figure(go.Scatter(x=record["predicted_delta"], y=record["actual_delta"], mode="markers",
                                       marker=dict(color=np.log10(record["n_removed"]), colorscale="Viridis", size=6,
                                                   colorbar=dict(title="removed", tickvals=[0, 1, 2, 3], ticktext=["1", "10", "100", "1000"])),
                                       customdata=np.stack([names, record["n_removed"]], axis=1),
                                       hovertemplate="%{customdata[0]} · %{customdata[1]} removed<br>predicted %{x:.3f}"
                                                     "<br>actual %{y:.3f}<extra></extra>"))
            lo, hi = float(record[["predicted_delta", "actual_delta"]].min().min()), float(record[["predicted_delta", "actual_delta"]].max().max())
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="grey"), showlegend=False))
            fig.update_layout(xaxis_title="predicted Δ margin", yaxis_title="actual Δ margin", height=400, showlegend=False,
                              margin=dict(t=10, b=40))
            st.plotly_chart(fig, key="cf_figure8")
            st.caption(f"{stats['n']} counterfactual{'' if stats['n'] == 1 else 's'} · " + (
                f"Pearson {stats['pearson']} · Spearman {stats['spearman']}" if stats["pearson"] is not None
                else "correlations need at least 3 verified removals with differing changes"))
        else:
            st.caption("No verified removals yet.")

if support_tab.open:
    with support_tab:
        st.subheader("Data support", help="How few training images must go for the prediction to turn wrong (App. F.3)")
        support = api.heuristic_support(name)
        if support == 0:
            st.write("The control models already misclassify this target: its support is 0.")
        else:
            if np.isfinite(support):
                st.write(f"Heuristic support: **{int(support)} images**, the fewest top positive weights whose sum exceeds "
                         "the control margin.")
                named = top_columns(int(support), "positive")
                train_grid(named[:48], "cf_support")
                st.button(f"+ add these {int(support)} to the basket", key="cf_add_support", on_click=add, args=(named,))
            else:
                st.write("Heuristic support: none. Even all positive weights together do not outweigh the control margin.")
            n_steps = st.session_state.get("cf_models", 8)
            st.button("Certify by bisection", key="cf_certify", on_click=request, args=("cf_certify_request",),
                      disabled=not access.can_retrain(),
                      help=f"Retrain {n_steps} models without the top-k for up to {SUPPORT_STEPS} values of k in "
                           f"(0, {api.support_k_max()}]; accept k only when their mean margin is below zero. {RETRAIN_HELP}")
            if st.session_state.pop("cf_certify_request", False):
                with access.retraining_job(run, n_steps * SUPPORT_STEPS):
                    result = api.certify_support(name, n_steps, progress=run_context.StreamlitProgress("Bisection over k:"))
                st.session_state[f"cf_certified:{run.name}:{column}"] = result
            result = st.session_state.get(f"cf_certified:{run.name}:{column}")
            if result is not None:
                st.write("Certified support: " + (f"**{result['support']} images**" if result["support"] is not None
                                                  else f"none up to k = {result['k_max']} (largest k tested without a flip: {result['lower']})"))
                st.dataframe(pd.DataFrame(result["steps"], columns=["k", "mean margin"]), hide_index=True, key="cf_steps")

        st.markdown("**Brittleness of the whole test set**")
        heuristic = _heuristic_supports(api, str(run.dir), api.predictions_version())
        certified = api.certified_supports()
        fig = go.Figure()
        for label, values in (("heuristic (all test targets)", heuristic), (f"certified ({len(certified)} targets)", certified)):
            finite = np.unique(values[np.isfinite(values)])
            if len(finite):
                fig.add_trace(go.Scatter(x=np.maximum(finite, 0.5), y=api.brittleness_cdf(values, finite), mode="lines",
                                         line_shape="hv", name=label))
        fig.update_layout(xaxis_type="log", xaxis_title="support size k (0 drawn at 0.5)", yaxis_title="fraction of targets ≤ k",
                          height=360, showlegend=True, legend=dict(orientation="h", y=1.1), margin=dict(t=30, b=40))
        st.plotly_chart(fig, key="cf_cdf")

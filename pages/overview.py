"""Overview: what the run is, and how well its datamodels predict models they never saw (the eval stage)."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.datamodels import quality
from backend.datamodels.evaluation import predict
from backend.store import catalog
from backend.store.run_dir import Run
from pages import components

N_SCATTER_TARGETS, N_SCATTER_MODELS = 16, 200

run = components.current_run()
manifest = run.manifest
dataset = manifest["dataset"]
st.title(f"Run {run.name}")
cols = st.columns(8)
cols[0].metric("Dataset", dataset["name"], help=dataset.get("spec"))
cols[1].metric("Train images", f"{run.n_train:,}")
cols[2].metric("Test images", f"{run.n_test:,}")
cols[3].metric("α", f"{manifest['alpha']:g}", help="fraction of the training set each model trains on")
cols[4].metric("Models", f"{manifest.get('n_models', 0):,}")
cols[5].metric("Architecture", manifest["arch"])
cols[6].metric("Seed", manifest["seed"])
accuracy = manifest.get("mean_test_accuracy")
cols[7].metric("Test accuracy", "—" if accuracy is None else f"{accuracy:.1%}",
               help="mean over the run's models of their accuracy on the test set")
with st.expander("Manifest"):
    st.json(manifest)

st.header("Datamodels on held-out models")
weights, bias, _ = components.require_datamodels(run)
metrics = quality.read_metrics(run)
lds = quality.stored_lds(run)
if metrics is None or lds is None:
    st.info("The datamodels have not been scored on held-out models yet (metrics.json and lds.npy are missing).")
    if quality.heldout_dir(run, metrics, catalog.data_dir()) is None:
        st.caption("Train a held-out run (same recipe, another seed):")
        st.code(components.hide_paths(quality.heldout_command(run)), language="bash")
    st.caption("Score the datamodels on it:")
    st.code(components.hide_paths(quality.eval_command(run)), language="bash")
    st.stop()
if quality.is_stale(run):
    st.warning(f"The datamodels were refitted after this evaluation; rerun `{components.hide_paths(quality.eval_command(run))}`.")

summary = metrics["lds"]["test"]
cols = st.columns(4)
cols[0].metric("Mean test LDS", f"{summary.get('mean', float('nan')):.3f}",
               help="Spearman correlation between predicted and actual margins over held-out models, per test target")
cols[1].metric("Median test LDS", f"{summary.get('median', float('nan')):.3f}")
cols[2].metric("Mean train LDS", f"{metrics['lds']['train'].get('mean', float('nan')):.3f}",
               help="training targets, each on the held-out models that did not train on it (eq. 9)")
cols[3].metric("Held-out models", f"{metrics['n_heldout_models']:,}", help=components.hide_paths(metrics.get("heldout_run", "")))

left, right = st.columns(2)
with left:
    st.subheader("Held-out LDS per test target")
    test_lds = np.asarray(lds[run.n_train:])
    histogram = go.Figure(go.Histogram(x=test_lds[np.isfinite(test_lds)], nbinsx=40))
    histogram.update_layout(xaxis_title="LDS", yaxis_title="test targets", height=320, margin=dict(t=10, b=40))
    st.plotly_chart(histogram, key="lds-histogram")
    st.caption(f"{summary['n_undefined']} of {summary['n_targets']} test targets have no LDS "
               "(a datamodel or the held-out margins are constant)")
with right:
    st.subheader("Predicted vs actual margins",
                 help=f"{N_SCATTER_TARGETS} random test targets × up to {N_SCATTER_MODELS} held-out models")
    heldout_path = quality.heldout_dir(run, metrics, catalog.data_dir())
    if heldout_path is None:
        st.caption(f"The held-out run {components.plain(components.hide_paths(metrics.get('heldout_run', '')))} is gone, "
                   "so its margins cannot be plotted.")
    else:
        heldout = Run(heldout_path)
        rng = np.random.default_rng(0)
        targets = np.sort(rng.choice(np.arange(run.n_train, run.n_targets), min(N_SCATTER_TARGETS, run.n_test), replace=False))
        models = np.sort(rng.choice(len(heldout.masks), min(N_SCATTER_MODELS, len(heldout.masks)), replace=False))
        predicted = predict(weights, bias, heldout.masks[models], targets)
        actual = np.asarray(heldout.margins[np.ix_(models, targets)], dtype=np.float64)
        scatter = go.Figure(go.Scattergl(x=predicted.ravel(), y=actual.ravel(), mode="markers",
                                         marker=dict(size=4, opacity=0.5)))
        lo, hi = float(min(predicted.min(), actual.min())), float(max(predicted.max(), actual.max()))
        scatter.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="grey")))
        scatter.update_layout(xaxis_title="predicted margin", yaxis_title="actual margin", height=320,
                              showlegend=False, margin=dict(t=10, b=40))
        st.plotly_chart(scatter, key="predicted-actual")

left, right = st.columns(2)
with left:
    st.subheader("Sample complexity", help="Held-out LDS of datamodels fitted on the first 1/8, 1/4, 1/2 and all models")
    if "sample_complexity" not in metrics:
        st.caption(f"Not computed (eval ran with --no-complexity); rerun `{components.hide_paths(quality.eval_command(run))}`.")
    else:
        curve = quality.complexity_curve(metrics)
        chart = go.Figure([
            go.Scatter(x=np.r_[curve["n_models"], curve["n_models"][::-1]], y=np.r_[curve["q75"], curve["q25"][::-1]],
                       fill="toself", mode="lines", line=dict(width=0), fillcolor="rgba(31,119,180,0.2)",
                       hoverinfo="skip", name="quartiles"),
            go.Scatter(x=curve["n_models"], y=curve["mean"], mode="lines+markers", name="mean"),
        ])
        chart.update_layout(xaxis_title="models used to fit", yaxis_title="test LDS", height=320, margin=dict(t=10, b=40),
                            xaxis=dict(type="log", tickvals=curve["n_models"], ticktext=[f"{n:,}" for n in curve["n_models"]]),
                            legend=dict(orientation="h", y=1.1))
        st.plotly_chart(chart, key="sample-complexity")
        st.caption(metrics["sample_complexity"].get("targets", "") + "".join(
            f" · {n} models: skipped ({reason.split(':')[0]})" for n, reason in curve["skipped"]))
with right:
    st.subheader("Table 5: linear predictors compared",
                 help="Ilyas et al. 2022, Table 5: mean over test targets, scored on the same held-out models")
    split = st.radio("Targets", ["test", "train"], horizontal=True, key="table5_split")
    st.dataframe(pd.DataFrame(quality.table5_rows(metrics, split)), hide_index=True,
                 column_config={
                     "Spearman (own target)": st.column_config.NumberColumn(
                         "Spearman", format="%.3f", help="with what it predicts: correctness for empirical influence, else margins"),
                     "Spearman (margin)": st.column_config.NumberColumn("vs margin", format="%.3f", help="Spearman with margins"),
                     "AUC (correct)": st.column_config.NumberColumn("AUC", format="%.3f", help="AUC for predicting correctness")})
    st.caption(f"fit on {metrics['table5']['n_fit_models']:,} models, scored on {metrics['table5']['n_heldout_models']:,}")

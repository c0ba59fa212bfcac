"""Overview: what the run is, and how well its datamodels predict models they never saw (the eval stage).

The landing page draws its charts with Vega-Lite and Table 5 as a static table: plotly's and the data grid's
front-end bundles cost a fresh browser more than a second more to load, and nothing here needs their selections.
"""
import numpy as np
import pandas as pd
import streamlit as st

from backend.api import RunAPI
from widgets import run_context, text, url_state

N_SCATTER_TARGETS, N_SCATTER_MODELS = 16, 200
CHART_HEIGHT = 320


def axis(field: str, title: str, **more) -> dict:
    return {"field": field, "type": "quantitative", "title": title, **more}


def chart(data: pd.DataFrame, spec: dict, key: str) -> None:
    st.vega_lite_chart(data, {"height": CHART_HEIGHT, **spec}, width="stretch", key=key)


run = run_context.current_run()
api = RunAPI(run)
manifest = run.manifest
dataset = manifest["dataset"]
st.title(f"Run {run.name}")
# The dataset in words, not a metric: a name like fashion-mnist is cut short in a metric's column.
spec = dataset.get("spec") or dataset["name"]
st.markdown(f"Dataset {text.plain(dataset['name'])}"
            + ("" if spec == dataset["name"] else f", loaded from {text.plain(text.hide_paths(spec))}"))
cols = st.columns(7)
cols[0].metric("Train images", f"{run.n_train:,}")
cols[1].metric("Test images", f"{run.n_test:,}")
cols[2].metric("α", f"{manifest['alpha']:g}", help="fraction of the training set each model trains on")
cols[3].metric("Models", f"{manifest.get('n_models', 0):,}")
cols[4].metric("Architecture", manifest["arch"])
cols[5].metric("Seed", manifest["seed"])
accuracy = manifest.get("mean_test_accuracy")
cols[6].metric("Test accuracy", "—" if accuracy is None else f"{accuracy:.1%}",
               help="mean over the run's models of their accuracy on the test set")
with st.expander("Manifest"):
    st.json(manifest)

st.header("Datamodels on held-out models")
_, _, lam = run_context.require_datamodels(run)
metrics = api.metrics()
lds = api.lds()
if metrics is None or lds is None:
    st.info("The datamodels have not been scored on held-out models yet (metrics.json and lds.npy are missing).")
    if api.heldout() is None:
        st.caption("Train a held-out run (same recipe, another seed):")
        st.code(text.hide_paths(api.heldout_command()), language="bash")
    st.caption("Score the datamodels on it:")
    st.code(text.hide_paths(api.eval_command()), language="bash")
    st.stop()
if api.lds_is_stale():
    st.warning(f"The datamodels were refitted after this evaluation; rerun `{text.hide_paths(api.eval_command())}`.")
run_context.unfitted_note(run, lam)

summary, train = metrics["lds"]["test"], metrics["lds"]["train"]
cols = st.columns(4)
cols[0].metric("Mean test LDS", text.number(summary.get("mean")),
               help="Spearman correlation between predicted and actual margins over held-out models, per test target")
cols[1].metric("Median test LDS", text.number(summary.get("median")))
cols[2].metric("Mean train LDS", text.number(train.get("mean")),
               help="training targets, each on the held-out models that did not train on it (eq. 9)"
               + ("; none is fitted yet" if not train.get("n_targets") else ""))
cols[3].metric("Held-out models", f"{metrics['n_heldout_models']:,}", help=text.hide_paths(metrics.get("heldout_run", "")))

left, right = st.columns(2)
with left:  # one chart at a time: each Vega view costs the browser a few hundred ms to build
    lds_tab, margins_tab, complexity_tab = url_state.lazy_tabs(
        ["Held-out LDS", "Predicted vs actual", "Sample complexity"], key="overview_chart")
if lds_tab.open:
    with lds_tab:
        test_lds = np.asarray(lds[run.n_train:])
        chart(pd.DataFrame({"LDS": test_lds[np.isfinite(test_lds)]}), {
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"x": axis("LDS", "LDS", bin={"maxbins": 40}), "y": {"aggregate": "count", "title": "test targets"}},
        }, key="lds-histogram")
        st.caption(f"{summary['n_undefined']:,} of {summary['n_targets']:,} test targets have no LDS "
                   "(a datamodel or the held-out margins are constant)")
if margins_tab.open:
    with margins_tab:
        heldout = api.heldout()
        if heldout is None:
            st.caption(f"The held-out run {text.plain(text.hide_paths(metrics.get('heldout_run', '')))} is "
                       "gone, so its margins cannot be plotted.")
        else:
            rng = np.random.default_rng(0)
            targets = np.sort(rng.choice(np.arange(run.n_train, run.n_targets), min(N_SCATTER_TARGETS, run.n_test),
                                         replace=False))
            models = np.sort(rng.choice(heldout.n_models, min(N_SCATTER_MODELS, heldout.n_models), replace=False))
            names = [api.name(c) for c in targets]
            predicted, actual = api.heldout_predictions(heldout, names, models)
            lo, hi = float(min(predicted.min(), actual.min())), float(max(predicted.max(), actual.max()))
            xy = {"x": axis("predicted", "predicted margin"), "y": axis("actual", "actual margin")}
            chart(pd.DataFrame({"predicted": predicted.ravel(), "actual": actual.ravel(),
                                "target": np.tile(names, len(models))}),
                  {"layer": [
                      {"mark": {"type": "circle", "size": 14, "opacity": 0.5},
                       "encoding": {**xy, "tooltip": [{"field": "target"}, *xy.values()]}},
                      {"data": {"values": [{"predicted": lo, "actual": lo}, {"predicted": hi, "actual": hi}]},
                       "mark": {"type": "line", "strokeDash": [4, 4], "color": "grey"}, "encoding": xy},
                  ]}, key="predicted-actual")
            st.caption(f"{len(targets)} random test targets × {len(models)} held-out models; the dashed line is "
                       "predicted = actual")
if complexity_tab.open:
    with complexity_tab:
        if "sample_complexity" not in metrics:
            st.caption(f"Not computed (eval ran with --no-complexity); rerun "
                       f"`{text.hide_paths(api.eval_command())}`.")
        else:
            curve = api.sample_complexity(metrics)
            counts = [int(n) for n in curve["n_models"]]
            x = axis("n_models", "models used to fit",
                     scale={"type": "log", "domain": [counts[0] / 1.2, counts[-1] * 1.2]},
                     axis={"values": counts, "format": ","})
            title, scale = "test LDS (mean; band: quartiles)", {"zero": False}
            chart(pd.DataFrame({k: curve[k] for k in ("n_models", "mean", "q25", "q75")}), {"layer": [
                {"mark": {"type": "area", "opacity": 0.2},
                 "encoding": {"x": x, "y": axis("q25", title, scale=scale), "y2": {"field": "q75"}}},
                {"mark": {"type": "line", "point": True, "tooltip": True},
                 "encoding": {"x": x, "y": axis("mean", title, scale=scale)}},
            ]}, key="sample-complexity")
            st.caption("Held-out LDS of datamodels fitted on the first 1/8, 1/4, 1/2 and all models: "
                       + metrics["sample_complexity"].get("targets", "") + "".join(
                           f" · {n} models: skipped ({reason.split(':')[0]})" for n, reason in curve["skipped"]))
with right:
    st.subheader("Table 5: linear predictors compared",
                 help="Ilyas et al. 2022, Table 5: mean over test targets, scored on the same held-out models")
    split = st.radio("Targets", ["test", "train"], horizontal=True, key="table5_split")
    rows = api.table5(metrics, split)
    st.table(pd.DataFrame([{name: value if isinstance(value, str) else "—" if value is None else f"{value:.3f}"
                            for name, value in row.items()} for row in rows]), hide_index=True)
    st.caption(f"fit on {metrics['table5']['n_fit_models']:,} models, scored on {metrics['table5']['n_heldout_models']:,}. "
               "Spearman (own target): with what the estimator predicts, correctness for empirical influence and "
               "margins otherwise; AUC (correct): for predicting whether a model gets the target right.")

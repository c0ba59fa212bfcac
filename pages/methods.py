"""Methods: every attribution method on the same yardsticks (LDS, certified supports, mislabel AUC, cost)."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.api import RunAPI
from widgets import run_context, text, url_state

run = run_context.current_run()
api = RunAPI(run)
st.title("Attribution methods")
methods = api.stored_methods()
report = api.methods_eval()
steps = api.missing_method_steps(report)
if not methods or report is None:
    st.info(f"Run {run.name} has {'no attribution scores' if not methods else 'no methods evaluation'} yet. "
            "These commands fill it in:")
    st.code(text.hide_paths("\n".join(steps)), language="bash")
    st.stop()

n_validation = report.get("validation_models", 0)
held = (f"held-out models {n_validation + 1}–{report['n_heldout_models']}; validation LDS on the first {n_validation}, "
        "where `methods-eval --select` chooses each method's setting from its small grid" if n_validation
        else f"{report['n_heldout_models']} held-out models")
supports = (f"Supports: certified by bisection with retraining ({report['support_params']['n_models']} models per "
            f"step, {report['support_params']['budget']} steps, k ≤ {report['support_params']['k_max']}) on the same "
            f"{len(report['targets'])} targets, {report['target_rule']}. Smaller support = a method that finds the "
            "images a prediction rests on." if report["modes"] else
            "Supports: none certified in this evaluation (`--modes none`).")
st.caption(f"LDS: mean over test targets of the Spearman correlation between Σ score over a held-out model's "
           f"training subset and its margin ({held}). {supports} Mislabel AUC: self-scores against labels flipped by "
           "plant-label-noise.")
table = pd.DataFrame(api.methods_table(report))
# "—": the method has no self-scores, or the run no planted label noise (the caption below says which).
table["mislabel AUC"] = [text.number(v) for v in table["mislabel AUC"]]
st.dataframe(table, hide_index=True, column_config={
    "LDS": st.column_config.NumberColumn(format="%.3f"), "validation LDS": st.column_config.NumberColumn(format="%.3f"),
    "MB stored": st.column_config.NumberColumn(format="%.1f"), "seconds": st.column_config.NumberColumn(format="%.1f"),
    "support seconds": st.column_config.NumberColumn(format="%.1f")})
if "note" in report["mislabel"]:
    st.caption(f"Mislabel AUC —: {report['mislabel']['note']}")

cdf_tab, pair_tab, curve_tab = url_state.lazy_tabs(["Support CDFs", "Who finds smaller support", "LDS against models used"],
                                                    key="methods_tab")
for tab in (cdf_tab, pair_tab):
    if tab.open and not report["modes"]:
        with tab:  # an evaluation run with `--modes none` (as `make run` does) certified no support
            st.caption("No supports certified yet: this evaluation skipped the support search (`--modes none`). "
                       "`methods-eval` without it, under What is missing, certifies them by retraining.")
if cdf_tab.open:
    with cdf_tab:
        for mode in report["modes"]:
            figure = go.Figure()
            for name, m in report["methods"].items():
                if mode not in m["support"]:  # judged with `--modes none`
                    continue
                cdf = m["support"][mode]["cdf"]
                # A step line: the share of targets with support ≤ k; targets never flipped keep it below 1.
                figure.add_trace(go.Scatter(x=[0, *cdf["k"]], y=[0, *cdf["fraction"]], mode="lines+markers",
                                            line_shape="hv", name=name))
            figure.update_layout(title=f"{mode} support", xaxis_title="support size k",
                                 yaxis_title="fraction of targets ≤ k", yaxis_range=[0, 1.02], height=340,
                                 margin=dict(t=40, b=40))
            st.plotly_chart(figure, key=f"cdf-{mode}")
if pair_tab.open:
    with pair_tab:
        for mode in report["modes"]:
            pairs = report["smaller_support"][mode]
            names = list(pairs)
            st.caption(f"{mode}: share of targets where the row's method finds strictly smaller support than the column's")
            st.dataframe(pd.DataFrame([[pairs[a].get(b, np.nan) for b in names] for a in names], index=names, columns=names),
                         column_config={n: st.column_config.NumberColumn(format="%.2f") for n in names})
if curve_tab.open:
    with curve_tab:
        curves = api.lds_curves(report)
        if curves:
            figure = go.Figure([go.Scatter(x=x, y=y, mode="lines+markers", name=label) for label, (x, y) in curves.items()])
            figure.update_layout(xaxis_title="models used", xaxis_type="log", yaxis_title="mean test LDS", height=360,
                                 margin=dict(t=10, b=40))
            st.plotly_chart(figure, key="lds-curve")
        else:
            st.caption("No curve yet: `eval` without --no-complexity gives the datamodels' sample complexity, and scoring "
                       "a method with several --models values (then methods-eval after each) gives its points.")
if steps:
    st.subheader("What is missing")
    st.code(text.hide_paths("\n".join(steps)), language="bash")

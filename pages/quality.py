"""Quality: how well each target's datamodel predicts held-out models (per-target LDS), worst first."""
import numpy as np
import pandas as pd
import streamlit as st

from backend.api import RunAPI
from widgets import image_grid, run_context, selection_actions, target_picker, text, url_state

NEIGHBOURS = "pages/neighbours.py"

run = run_context.current_run()
api = RunAPI(run)
_, _, lam = run_context.require_datamodels(run)
st.title("Datamodel quality")
lds = api.lds()
if lds is None:
    st.info(f"Run {run.name} has no per-target LDS yet (lds.npy is missing). The eval stage writes it:")
    st.code(text.hide_paths(api.eval_command()), language="bash")
    st.stop()
if api.lds_is_stale():
    st.warning(f"The datamodels were refitted after lds.npy was written; rerun `{text.hide_paths(api.eval_command())}`.")
run_context.unfitted_note(run, lam)
mean_margin, accuracy = run_context.margin_summary(run)

split = st.radio("Targets", ["test", "train"], horizontal=True, key="quality_split")
tag, tagged = selection_actions.tag_filter(run, key="quality_tag")
start, stop = run_context.split_range(run, split)
st.caption("Per-target linear datamodeling score: the Spearman correlation, over held-out models, between the "
           "margin the datamodel predicts from a model's training subset and the margin the model reached "
           "(a training target only over the models that left it out). Empty where undefined.")

k = st.slider("Images per list", min_value=1, max_value=48, value=12, key="quality_k")
worst_tab, wrong_tab = url_state.lazy_tabs(["Worst predicted", "Mistakes · Hardest · Most unstable"], key="quality_tab")
if worst_tab.open:
    with worst_tab:
        worst = [api.column(name) for name in api.lowest(lds, split, k, among=tagged)]
        st.caption("Lowest per-target LDS; click one to see its neighbours")
        image_grid.image_grid(run, worst, [f"LDS {lds[c]:+.2f}" for c in worst], key="worst", page=NEIGHBOURS)
if wrong_tab.open:
    with wrong_tab:
        target_picker.hard_targets(run, start, stop, k, key="quality", page=NEIGHBOURS)

st.subheader(f"All {split} targets" + (f" tagged {text.plain(tag)}" if tag else ""),
             help="Click a column header to sort; click a row to open its neighbours")
table = pd.DataFrame({
    "target": api.targets(split),
    "label": [run.class_names[int(y)] for y in run.labels[start:stop]],
    "LDS": np.asarray(lds[start:stop]),
    "mean margin": np.asarray(mean_margin[start:stop]),
    "accuracy": np.asarray(accuracy[start:stop]),
})
predicted = run_context.majority(run)
if predicted is not None:
    table["majority prediction"] = [run.class_names[int(c)] for c in predicted[0][start:stop]]
    table["majority share"] = np.asarray(predicted[1][start:stop])
if tagged is not None:
    table = table.iloc[tagged[(tagged >= start) & (tagged < stop)] - start].reset_index(drop=True)
event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key=f"lds-{split}",
                     column_config={"LDS": st.column_config.NumberColumn(format="%.3f"),
                                    "mean margin": st.column_config.NumberColumn(format="%+.3f"),
                                    "accuracy": st.column_config.NumberColumn(format="percent"),
                                    "majority share": st.column_config.NumberColumn(format="percent")})
if event.selection.rows:
    url_state.open_target(NEIGHBOURS, run, table["target"].iloc[event.selection.rows[0]])
    url_state.follow_open_request()

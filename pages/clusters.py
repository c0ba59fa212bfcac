"""Clusters: sub-populations of a class found by spectral clustering of datamodel embeddings (App. I).

Pick a class (or the whole test set); each cluster is a grid of its most typical members, the 2-D
spectral layout shows how they separate, and a box or lasso selection on it shows the chosen targets.
Clicking an image makes it the target, whose most similar targets (by datamodel) are listed below. With a tag
chosen, the grids show that tag's targets only.
"""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from backend.api import RunAPI
from widgets import image_grid, run_context, selection_actions, text, url_state

NEIGHBOURS_PAGE = "pages/neighbours.py"
WHOLE = -1

run = run_context.current_run()
api = RunAPI(run)
quality = api.cluster_quality()
column = url_state.current_target(run)
name = api.name(column)

st.title("Clusters of datamodel embeddings")
classes = [q["class"] for q in quality["per_class"]]  # the classes that have test targets
current_class = int(run.labels[column]) if column >= run.n_train else classes[0]
choice = st.selectbox("Class", [*classes, WHOLE],
                      format_func=lambda c: "whole test set (all classes)" if c == WHOLE else f"class {run.class_names[c]}",
                      key="clusters_class", **url_state.url_int("class", "clusters_class", [*classes, WHOLE], current_class))
tag, tagged = selection_actions.tag_filter(run, key="clusters_tag")
targets, clustering = api.clustering(None if choice == WHOLE else choice)
info = quality["whole"] if choice == WHOLE else next(q for q in quality["per_class"] if q["class"] == choice)
columns = np.array([api.column(t) for t in targets], dtype=np.int64)
position = {t: j for j, t in enumerate(targets)}
cluster_of = dict(zip(columns.tolist(), clustering.labels.tolist()))

metrics = st.columns(4)
metrics[0].metric("Targets", f"{len(targets):,}")
metrics[1].metric("Clusters", info["k"])
metrics[2].metric("Mean silhouette", "—" if info["silhouette"] is None else f"{info['silhouette']:.3f}",
                  help="From -1 to 1: how much closer each target is to its own cluster than to the next one")
if choice == WHOLE:
    metrics[3].metric("NMI with the labels", f"{info['nmi']:.3f}", delta=f"{info['nmi'] - quality['pixels']['nmi']:+.3f} vs pixels",
                      help=f"Normalised mutual information between clusters and classes. Raw pixels, clustered by the "
                           f"identical procedure: {quality['pixels']['nmi']:.3f}")

@text.fragment
def cluster_members() -> None:
    """The most typical members of the open cluster: the slider and the tabs rerun this alone (st.fragment)."""
    per_cluster = st.slider("Images per cluster", min_value=1, max_value=36, value=12, key="clusters_k",
                            help="The members with the highest silhouette, i.e. the most typical of their cluster, first")
    st.caption("Sizes: " + " · ".join(f"cluster {k} {n} images" for k, n in enumerate(np.bincount(clustering.labels,
                                                                                                  minlength=clustering.k))))
    tabs = url_state.lazy_tabs([f"Cluster {k}" for k in range(clustering.k)], key="cluster")
    for k, tab in enumerate(tabs):
        if not tab.open:
            continue
        inside = np.flatnonzero(clustering.labels == k)
        silhouette = info["cluster_silhouettes"][k]
        tab.subheader(f"Cluster {k} · {len(inside)} images · silhouette " + ("—" if silhouette is None else f"{silhouette:.3f}"))
        typical = np.array([position[t] for t in api.typical(targets, clustering, k, per_cluster, among=tagged)],
                           dtype=np.int64)
        with tab:
            image_grid.image_grid(run, columns[typical], [f"silhouette {clustering.silhouette[j]:+.2f}" for j in typical],
                                  key=f"cluster-{k}", n_cols=3)


# The layout and the cluster grids on the left, the target and its similar targets beside them: a click's
# result lands next to it.
explore, target_side = st.columns([3, 2])
with explore:
    st.subheader("2-D spectral layout", help="The two leading non-trivial spectral coordinates of the affinity matrix. "
                 "Draw a box or lasso to see the selected targets.")
    figure = go.Figure()
    for k in range(clustering.k):
        inside = clustering.labels == k
        figure.add_trace(go.Scattergl(x=clustering.layout[inside, 0], y=clustering.layout[inside, 1], mode="markers",
                                      name=f"cluster {k}", customdata=columns[inside].tolist(),
                                      hovertext=[targets[j] for j in np.flatnonzero(inside)],
                                      hoverinfo="text+name"))
    figure.update_layout(height=360, margin=dict(t=10, b=40), dragmode="lasso", xaxis_title="spectral 1",
                         yaxis_title="spectral 2")
    event = st.plotly_chart(figure, key=f"layout-{choice}", on_select="rerun", selection_mode=("box", "lasso"))
    selected = image_grid.selected_customdata(event)
    if tagged is not None:
        selected = [c for c, keep in zip(selected, np.isin(selected, tagged)) if keep]
    if selected:
        st.subheader(f"Selected targets ({len(selected)})")
        image_grid.image_grid(run, np.array(selected), [f"cluster {cluster_of[c]}" for c in selected], key="selected",
                              n_cols=3)

    cluster_members()
    with st.expander("Tag or export a cluster or the selection"):
        choices = {f"Cluster {k} ({n})": columns[clustering.labels == k]
                   for k, n in enumerate(np.bincount(clustering.labels, minlength=clustering.k))}
        if selected:
            choices = {f"The selection ({len(selected)})": np.array(selected), **choices}
        selection_actions.tag_and_export(run, run_context.target_table(run), choices,
                                         selection_actions.stored_tags(run), key="clusters")

with target_side:
    st.header(f"Targets most similar to {name}", help="Nearest targets by cosine similarity of datamodel embeddings: "
              "they depend on the same training examples. Click an image on the left to change the target; click one "
              "here to open it on the Neighbours page.")
    similar = api.similar(name, k=None)
    neighbours, similarity = np.array([api.column(t) for t, _ in similar], dtype=np.int64), [s for _, s in similar]
    st.image(image_grid.large_image(run, column, 160),
             caption=" · ".join(f for f in (name, f"label {run_context.label_of(run, column)}",
                                           run_context.predicted_text(run, column)) if f))
    image_grid.image_grid(run, neighbours, [f"cos {s:+.3f}" for s in similarity], key="similar", page=NEIGHBOURS_PAGE,
                          n_cols=2)

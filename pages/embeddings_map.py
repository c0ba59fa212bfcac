"""Embeddings map: every target, train and test, at its point of a 2-D t-SNE of its datamodel embedding.

`analyze` stores the map (structure/map_layout.npy); this page only draws it, one WebGL point per target
(Scattergl: 70,000 points stay fluid, and none is dropped). A click on a point shows its image beside the map
(plotly's hover box cannot hold an image, and Streamlit is not told of hovers); a box or lasso fills the grid
beside it with the targets it encloses.
"""
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from backend.api import RunAPI
from widgets import image_grid, run_context, url_state

NEIGHBOURS_PAGE = "pages/neighbours.py"
PER_PAGE = 24  # images of a selection per grid page: 8 rows of 3 beside the map
PALETTE = qualitative.Dark24


@st.cache_resource(max_entries=16, show_spinner=False)
def map_figure(_api: RunAPI, path: str, version: int, by: str) -> go.Figure:
    """The map coloured `by`: per category one Scattergl trace of its training targets and one of its test targets
    (one legend entry), each point's customdata its margins column. Held per run version (st.cache_resource: the
    figure is not copied; st.plotly_chart copies it before drawing).

    Sized for 70,000 points: the coordinates and columns go as typed arrays (int32 customdata: a point of a
    selection carries it as a number), and a training point's name is its column, so its hover text is
    "train:%{customdata}" and only test points carry a name each (70,000 names doubled the figure's JSON)."""
    layout = np.asarray(_api.map_layout())
    codes, names = _api.map_colours(by)
    n_train = _api.run.n_train
    size = 4 if len(codes) > 10_000 else 6
    figure = go.Figure()
    for code, name in enumerate(names):
        inside = np.flatnonzero(codes == code)
        colour = PALETTE[code % len(PALETTE)]
        for split, part in (("train", inside[inside < n_train]), ("test", inside[inside >= n_train])):
            if len(part) == 0:
                continue
            hover = dict(hovertemplate="train:%{customdata}<extra>" + name + "</extra>") if split == "train" else \
                dict(text=[_api.name(c) for c in part], hovertemplate="%{text}<extra>" + name + "</extra>")
            figure.add_trace(go.Scattergl(
                x=layout[part, 0], y=layout[part, 1], mode="markers", customdata=part.astype(np.int32),
                name=f"{name} ({len(inside):,})", legendgroup=name, showlegend=split == "train" or len(part) == len(inside),
                marker=dict(size=size, color=colour, opacity=0.8), **hover))
    figure.update_layout(height=640, margin=dict(t=40, b=10, l=10, r=10), dragmode="lasso",
                         legend=dict(itemsizing="constant"), xaxis=dict(showticklabels=False, title="t-SNE 1"),
                         yaxis=dict(showticklabels=False, title="t-SNE 2"))
    return figure

run = run_context.current_run()
api = RunAPI(run)
n_points = len(api.map_layout())
st.title("Embeddings map")
st.caption(f"All {n_points:,} targets ({run.n_train:,} train, {run.n_test:,} test), each at its point of a 2-D t-SNE "
           "of its datamodel's PCA coordinates: targets that depend on the same training images sit together. "
           "Click a point to see its image; draw a lasso or box to fill the grid.")
options = api.map_colourings()
by = st.selectbox("Colour by", options, key="map_colour",
                  format_func=lambda o: {"correct": "correct (majority of models)", "prediction": "majority prediction"}.get(o, o),
                  **url_state.url_choice("colour", "map_colour", options, "label"))
codes, names = api.map_colours(by)

map_side, grid_side = st.columns([3, 2])
with map_side:
    event = st.plotly_chart(map_figure(api, str(run.dir), run_context.run_version(run), by), key=f"map-{by}",
                            on_select="rerun", selection_mode=("points", "box", "lasso"))
selected = image_grid.selected_customdata(event)

with grid_side:
    if not selected:
        st.info("Click a point to see its image here, or draw a lasso (or a box, from the chart's toolbar) around "
                "some to see them all.")
    elif len(selected) == 1:
        column = selected[0]
        name = api.name(column)
        st.subheader(name)
        st.image(image_grid.large_image(run, column, 192), caption=" · ".join(
            f for f in (f"label {run_context.label_of(run, column)}", run_context.predicted_text(run, column),
                        names[codes[column]]) if f))
        st.page_link(NEIGHBOURS_PAGE, label=f"Open {name} on Neighbours", icon=":material/hub:",
                     query_params={**st.query_params.to_dict(), "target": name})
    else:
        st.subheader(f"Selected targets ({len(selected):,})")
        n_pages = -(-len(selected) // PER_PAGE)
        page = 1
        if n_pages > 1:
            page = st.number_input(f"Page (of {n_pages:,}, {PER_PAGE} images each)", min_value=1, max_value=n_pages,
                                   value=1, key=f"map_page-{by}")
        shown = np.array(selected[(page - 1) * PER_PAGE:page * PER_PAGE])
        # The caption's first two lines hold the name, label and prediction: the colour's category only adds to them.
        captions = [names[codes[c]] if by in ("correct", "cluster") else "" for c in shown]
        image_grid.image_grid(run, shown, captions, key="map-selected", page=NEIGHBOURS_PAGE, n_cols=3)

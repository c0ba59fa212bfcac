"""Embeddings map: every target, train and test, at its point of a 2-D t-SNE of its datamodel embedding.

`analyze` stores the map (structure/map_layout.npy); this page only draws it, one point per target, on the point
map's canvas (widgets/point_map.py: 70,000 points drawn in under 0.1 s, none dropped). Hovering a point shows its
image in the tooltip; a click shows it beside the map; a lasso fills the grid beside it with the targets inside.
The map and the grid are one fragment: a hover or a selection reruns them, not the page.
"""
import numpy as np
import streamlit as st
from plotly.colors import qualitative

from backend.api import RunAPI
from widgets import image_grid, point_map, run_context, selection_actions, text, url_state

NEIGHBOURS_PAGE = "pages/neighbours.py"
PER_PAGE = 24  # images of a selection per grid page: 8 rows of 3 beside the map
PALETTE = qualitative.Dark24
MAX_VERTICES = 1_000  # a lasso from the browser has at most 200


@st.cache_resource(max_entries=16, show_spinner=False)
def map_points(_api: RunAPI, path: str, version: int, by: str, tag: str | None, tagged: np.ndarray | None) -> bytes:
    """The map coloured `by` (the `tag`'s `tagged` targets against the others for "tag"), as the point map's
    payload; held per run version and tagging (bytes are never copied)."""
    codes, names = _api.map_colours(by, tagged)
    version = f"{path}:{version}:{by}" + (f":{tag}:{hash(tagged.tobytes())}" if by == "tag" else "")
    return point_map.payload(_api.map_layout(), codes, names, [PALETTE[c % len(PALETTE)] for c in range(len(names))],
                             _api.run.n_train, version, height=600)


def is_column(api: RunAPI, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < api.run.n_targets


def selected_columns(api: RunAPI, selection) -> tuple[list[int], list | None]:
    """The columns a point map selection holds, ascending, and its lasso (None for a click): the state comes from the
    browser, so anything but a column in range or a polygon of finite numbers selects nothing."""
    if not isinstance(selection, dict):
        return [], None
    point, lasso = selection.get("point"), selection.get("lasso")
    if is_column(api, point):
        return [point], None
    try:
        polygon = np.asarray(lasso, dtype=np.float64)
    except (TypeError, ValueError):
        return [], None
    if polygon.ndim != 2 or polygon.shape[1] != 2 or not 3 <= len(polygon) <= MAX_VERTICES \
            or not np.isfinite(polygon).all():
        return [], None
    return api.map_lasso(polygon).tolist(), polygon.tolist()


@st.fragment
def map_and_grid(api: RunAPI, by: str, tag: str | None, tagged: np.ndarray | None, points: bytes,
                 codes: np.ndarray, names: list[str]) -> None:
    """The map (`points`, coloured `codes` → `names`) and the selection's grid; with a tag, a lasso selects only that
    tag's targets. The run's files are read before, by the page: a broken one is the app's one error, not the
    fragment's."""
    run = api.run
    key = f"map-{by}" if tag is None else f"map-{by}-{tag}"
    state = st.session_state.get(key) or {}
    selected, lasso = selected_columns(api, state.get("selection"))
    if lasso is not None and tagged is not None:
        selected = [c for c, keep in zip(selected, np.isin(selected, tagged)) if keep]
    hovered = state.get("hover")
    hover = (hovered, image_grid.image_uri(run, hovered)) if is_column(api, hovered) else None
    map_side, grid_side = st.columns([3, 2])
    with map_side:
        point_map.point_map(points, key=key, hover_image=hover, lasso=lasso)
    with grid_side:
        if not selected and lasso is not None and tag is not None:
            st.info(f"None of the targets inside the lasso is tagged {text.plain(tag)}.")
        elif not selected:
            st.info("Hover a point to see its image, click it to open it here, or draw a lasso round some to see them "
                    "all (Pan and the mouse wheel move and zoom the map).")
        elif lasso is None:
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
                page = st.number_input(f"Page (of {n_pages:,}, {PER_PAGE} images each)", min_value=1,
                                       max_value=n_pages, value=1, key=f"{key}-page")
            shown = np.array(selected[(page - 1) * PER_PAGE:page * PER_PAGE])
            # The caption's first two lines hold the name, label and prediction: the colour's category only adds to them.
            captions = [names[codes[c]] if by in ("correct", "cluster") else "" for c in shown]
            image_grid.image_grid(run, shown, captions, key="map-selected", page=NEIGHBOURS_PAGE, n_cols=3)


run = run_context.current_run()
api = RunAPI(run)
mapped = np.isfinite(api.map_layout()[:, 0])  # NaN: an unfitted target, not drawn
n_mapped, n_train_mapped = int(mapped.sum()), int(mapped[:run.n_train].sum())
st.title("Embeddings map")
st.caption(f"{'All ' if mapped.all() else ''}{n_mapped:,} targets ({n_train_mapped:,} train, "
           f"{n_mapped - n_train_mapped:,} test{'' if mapped.all() else '; the unfitted ones are not drawn'}), "
           "each at its point of a 2-D t-SNE of its datamodel's PCA coordinates: targets that depend on the same "
           "training images sit together.")
tag, tagged = selection_actions.tag_filter(run, key="map_tag")
options = [o for o in api.map_colourings() if o != "tag" or tag is not None]
by = st.selectbox("Colour by", options, key="map_colour",
                  format_func=lambda o: {"correct": "correct (majority of models)", "prediction": "majority prediction",
                                         "tag": f"tagged {tag}"}.get(o, o),
                  **url_state.url_choice("colour", "map_colour", options, "label"))
codes, names = api.map_colours(by, tagged)
map_and_grid(api, by, tag, tagged, map_points(api, str(run.dir), run_context.run_version(run), by, tag,
                                              tagged if by == "tag" else None), codes, names)

"""The image grid: thumbnails captioned with their fields, one plotly figure whose click opens (or picks) an image,
and the one reader of a plotly selection event."""
from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import PIL.Image
import plotly.graph_objects as go
import streamlit as st

from backend.datasets import thumbnails
from backend.store.rows import read_row
from backend.store.run_dir import Run
from backend.store.targets import target_name
from widgets.run_context import label_of, predicted_text
from widgets.url_state import open_target, set_target

THUMB = 96
LINE_PX = 13  # an 11-px caption line under a thumbnail
CAPTION_CHARS = 24  # a label · prediction line longer than this (Fashion-MNIST's class names) takes two lines
MARK_RGB = (198, 40, 40)  # the frame of a marked image (in the Counterfactuals basket)


def selected_customdata(selection) -> list[int]:
    """The customdata of every point of a plotly selection (an st.plotly_chart event or its state).

    Every selectable chart gives each point one integer as customdata (a list of ints, not a numpy column:
    Chromium sends a typed array's row as {"0": value}), so a point arrives as tests/pages/chromium_selection.json
    shows, recorded from Chromium, with its customdata a number.
    """
    points = selection["selection"]["points"] if selection else []
    return [int(point["customdata"]) for point in points]


def _png_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _tile(run: Run, column: int) -> np.ndarray:
    """The thumbnail of a target as (THUMB', THUMB', 3) uint8 (grey images as RGB), at most THUMB px square."""
    image = large_image(run, column, THUMB)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def large_image(run: Run, column: int, width: int) -> np.ndarray:
    """One target's image enlarged by the largest whole factor that keeps it at most `width` px (thumbnails.upscale)."""
    return thumbnails.upscale(read_row(run.images, column), width)


def image_uri(run: Run, column: int, width: int = THUMB) -> str:
    """large_image as a PNG data URI, for a component's HTML (the Embeddings map's tooltip)."""
    return _png_uri(large_image(run, column, width))


def _label_lines(label: str, prediction: str) -> list[str]:
    """The caption's label and prediction: one line, or two where one would widen the cell past CAPTION_CHARS
    (a grid wider than its container is scaled down, its caption text is not, and captions would overlap)."""
    fields = [f for f in (label, prediction) if f]
    line = " · ".join(fields)
    return [line] if len(line) <= CAPTION_CHARS else fields


def label_line_chars(class_names: list[str]) -> int:
    """The longest label or prediction caption line a grid draws for these classes (a page sizes its columns by it)."""
    return max(len(line) for a in class_names for b in class_names for line in _label_lines(f"label {a}", f"pred {b} 100%"))


def image_grid(run: Run, columns: np.ndarray, captions: list[str], key: str, n_cols: int = 6,
               page: str | None = None, on_pick: Callable[[int], None] | None = None,
               marked: Collection[int] = ()) -> None:
    """Thumbnails captioned with their fields; clicking an image makes it the target, on `page` if given, or,
    with `on_pick`, calls on_pick(column) instead (the Counterfactuals basket). Images in `marked` are framed.
    Pick n_cols so that n_cols cells (~130 px each) fit the container at 1280 px: a wider figure is scaled
    down to fit, but its caption text is not, so captions would overlap and clip.

    One plotly figure per grid: the thumbnails as one image, and an invisible point at the centre of every
    cell whose customdata is the image's margins column. Hovering anywhere in a cell names the nearest point
    (hoverdistance -1), so a click on an image or its caption selects it (selection_mode "points"), and the
    selection event opens it. (One st.image and st.button per tile drew 2 elements a tile and made the small
    name button, not the image, the thing to click.) The widget key holds the grid's images and the current
    target, so a selection never outlives the view it was made in (nor the marks it was made on).
    """
    if len(columns) == 0:
        st.caption("none")
        return
    columns, marked = [int(c) for c in columns], {int(c) for c in marked}
    lines = [[target_name(c, run.n_train), *_label_lines(f"label {label_of(run, c)}", predicted_text(run, c)), caption]
             for c, caption in zip(columns, captions)]
    tiles = [_tile(run, c) for c in columns]
    side = max(max(t.shape[:2]) for t in tiles)
    width = max(side + 8, 6 * max(len(line) for tile in lines for line in tile))  # ~5 px a character at 11 px
    height = side + LINE_PX * (max(len(tile) for tile in lines) + 1)
    n_cols = min(n_cols, len(columns))
    n_rows = -(-len(columns) // n_cols)
    montage = np.full((n_rows * height, n_cols * width, 3), 255, np.uint8)
    x, y, caption_y = [], [], []
    for i, tile in enumerate(tiles):
        row, col = divmod(i, n_cols)
        top, left = row * height + (side - tile.shape[0]) // 2, col * width + (width - tile.shape[1]) // 2
        if columns[i] in marked:
            montage[max(0, top - 3):top + tile.shape[0] + 3, max(0, left - 3):left + tile.shape[1] + 3] = MARK_RGB
        montage[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
        x.append(col * width + width / 2)
        y.append(row * height + height / 2)
        caption_y.append(row * height + side + 2)
    text = ["<br>".join(tile) for tile in lines]
    action = "click to add or remove" if on_pick is not None else f"click to open on {Path(page or 'this page').stem}"
    figure = go.Figure([
        go.Image(source=_png_uri(montage), hoverinfo="skip"),
        go.Scatter(x=x, y=y, customdata=columns, mode="markers", text=text, marker=dict(size=2, opacity=0),
                   selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
                   hovertemplate=f"%{{text}}<br><i>{action}</i><extra></extra>"),
        go.Scatter(x=x, y=caption_y, mode="text",
                   text=text, textposition="bottom center", textfont=dict(size=11), hoverinfo="skip"),
    ])
    figure.update_xaxes(visible=False, range=[-0.5, n_cols * width - 0.5], fixedrange=True)
    figure.update_yaxes(visible=False, range=[n_rows * height - 0.5, -0.5], fixedrange=True)
    figure.update_layout(width=n_cols * width, height=n_rows * height, margin=dict(l=0, r=0, t=0, b=0),
                         showlegend=False, dragmode=False, hovermode="closest", hoverdistance=-1,
                         plot_bgcolor="white", paper_bgcolor="white",
                         hoverlabel=dict(bgcolor="white", font=dict(color="black", size=12)))
    shown = (columns, sorted(marked.intersection(columns)), st.query_params.get("target"))
    digest = hashlib.sha1(repr(shown).encode()).hexdigest()[:10]
    event = st.plotly_chart(figure, key=f"{key}-{digest}", on_select="rerun", selection_mode="points",
                            width="content", theme=None, config={"displayModeBar": False})
    clicked = selected_customdata(event)
    if not clicked:
        return
    name = target_name(clicked[0], run.n_train)
    if on_pick is not None:
        on_pick(clicked[0])
    elif page is not None:
        open_target(page, run, name)
    elif name != st.query_params.get("target"):  # (the target itself clicked: nothing to open)
        set_target(name)
    else:
        return
    st.rerun()

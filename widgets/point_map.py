"""The point map: tens of thousands of coloured points on a canvas, a Streamlit component of inline JavaScript
(point_map.js; st.components.v2, no build step), because plotly cannot do what the Embeddings map needs.

- Speed: plotly's Scattergl sets up WebGL contexts and shaders per chart; without a GPU (Chromium's software
  renderer) a warm visit of 70,000 points took 4.5–6.1 s at load 15–17. The canvas writes every point into one
  ImageData in one pass (28–63 ms at load 11), from typed arrays sent as bytes (10 bytes a point).
- Hover: Streamlit is not told of plotly's hovers. The component sets its "hover" state when the pointer rests
  on a point; Python answers in the next run with that image (`hover_image`), shown in the tooltip.
- A lasso goes to Python as its polygon (the "selection" state), not as every point inside it (8 MB of JSON for
  70,000 points): Python selects the points (RunAPI.map_lasso). A click sets {"point": column}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

_JS = (Path(__file__).parent / "point_map.js").read_text()
_CSS = """
.pm-box { font-family: var(--st-font, sans-serif); font-size: 13px; }
.pm-bar { display: flex; gap: 6px; margin-bottom: 4px; }
.pm-button { border: 1px solid #ccc; background: #fff; border-radius: 4px; padding: 2px 10px; cursor: pointer; }
.pm-button.pm-on { background: #333; color: #fff; }
.pm-stage { position: relative; width: 100%; }
.pm-points, .pm-marks { position: absolute; left: 0; top: 0; }
.pm-marks { cursor: crosshair; touch-action: none; }
.pm-tip { position: absolute; display: none; pointer-events: none; background: rgba(255, 255, 255, 0.95);
          border: 1px solid #999; border-radius: 4px; padding: 4px; z-index: 2; }
.pm-tip img { image-rendering: pixelated; width: 96px; height: 96px; object-fit: contain; margin-top: 3px; }
.pm-legend { display: flex; flex-wrap: wrap; gap: 4px 12px; margin-top: 6px; }
.pm-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; }
"""
_HTML = "<div></div>"
_component = st.components.v2.component("datamodels.point_map", html=_HTML, css=_CSS, js=_JS)


def payload(layout: np.ndarray, codes: np.ndarray, names: list[str], colours: list[str], n_train: int,
            version: str, height: int) -> bytes:
    """The points as the component reads them: u32 header length, the JSON header (names, colours, counts,
    bounds; padded to 4 bytes), float32 xy (n, 2), uint16 codes (n). `version` names the points (run, its
    version and the colouring): the browser redraws only when it changes."""
    layout = np.asarray(layout, dtype=np.float32)
    codes = np.asarray(codes)
    (x0, y0), (x1, y1) = np.nanmin(layout, axis=0), np.nanmax(layout, axis=0)  # NaN: unfitted, not drawn
    pad_x, pad_y = 0.03 * (x1 - x0 or 1), 0.03 * (y1 - y0 or 1)
    header = json.dumps({"n": len(layout), "n_train": n_train, "names": names, "colours": colours,
                         "counts": np.bincount(codes[np.isfinite(layout[:, 0])], minlength=len(names)).tolist(), "version": version,
                         "bounds": [float(x0 - pad_x), float(x1 + pad_x), float(y0 - pad_y), float(y1 + pad_y)],
                         "height": height, "size": 3 if len(layout) > 10_000 else 6}).encode()
    header += b" " * (-len(header) % 4)
    return len(header).to_bytes(4, "little") + header + layout.tobytes() + codes.astype(np.uint16).tobytes()


def point_map(points: bytes, key: str, hover_image: tuple[int, str] | None = None,
              lasso: list | None = None, height: int = 600) -> dict:
    """Draw `points` (a `payload`) and return the component's state: "selection" ({"lasso": [[x, y], ...]} in
    the map's coordinates, {"point": column}, or None) and "hover" (the column the pointer rests on, or None).
    hover_image: (column, data URI) for the tooltip; lasso: the selection's polygon, drawn again after a remount."""
    view = {"hover": {"column": hover_image[0], "uri": hover_image[1]} if hover_image else {}, "lasso": lasso}
    result = _component(data=points + json.dumps(view).encode(), key=key, height=height + 70,
                        default={"selection": None, "hover": None},
                        on_selection_change=lambda: None, on_hover_change=lambda: None)
    return {"selection": result.get("selection"), "hover": result.get("hover")}

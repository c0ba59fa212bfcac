""""Most similar to this image": a target's nearest targets in any stored space (RunAPI.similar), as a grid
whose click walks to the image clicked."""
from __future__ import annotations

import numpy as np
import streamlit as st

from backend.api import SIMILARITY_SPACES, RunAPI
from widgets import image_grid, text, url_state

K = 12


@text.fragment
def similar_images(api: RunAPI, target: str, among: np.ndarray | None = None) -> None:
    """The K targets most similar to `target` by the space picked (its choice in the URL as `similar`), only those
    `among` (margins columns: a tag's) if given; a change of space reruns this alone (st.fragment)."""
    spaces = api.similarity_spaces()
    st.subheader("Most similar images", help="Train and test images nearest this one in the space picked: "
                 "datamodel embeddings (they depend on the same training images), the control model's features, "
                 "pixels or self-supervised embeddings. Click one to open it.")
    if not spaces:
        st.caption(f"No space to search: `python -m precompute analyze --run {text.hide_paths(api.run.dir)}` stores them")
        return
    by = st.selectbox("Similar by", spaces, key="similar_by", format_func=lambda s: f"{s}: {SIMILARITY_SPACES[s][2]}",
                      **url_state.url_choice("similar", "similar_by", spaces, spaces[0]))
    found = api.similar(target, K, by, among=among)
    image_grid.image_grid(api.run, [api.column(name) for name, _ in found], [f"sim {s:+.3f}" for _, s in found],
                          key=f"similar-{by}")

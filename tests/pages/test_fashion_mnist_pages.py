"""The dashboard on a run of the real Fashion-MNIST slice: its grey 28×28 images and its class names reach the pages."""
from __future__ import annotations

import pytest

from backend.leakage.analysis import load_candidates
from backend.leakage.annotations import ENV_VAR
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from tests.conftest import open_app

pytestmark = pytest.mark.slow
RUN = "fashion-slice"


def test_review_shows_each_real_pair_with_its_class_names(fashion_slice_data_dir, fashion_mnist_slice, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(fashion_slice_data_dir))
    (tmp_path / "votes.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'votes.db'}")
    _, pairs = fashion_mnist_slice
    labels = dict(zip((t for t, _ in pairs), ("T-shirt/top", "Dress")))  # FASHION_MNIST_PAIRS' classes
    queue = load_candidates(Run(fashion_slice_data_dir / "runs" / RUN)).queue.tolist()
    at = open_app({"run": RUN, "annotator": "ann"}, "review")
    for test in queue[:max(queue.index(t) for t, _ in pairs) + 1]:
        # The test image's caption is its st.image caption; each candidate's is the st.caption under its thumbnail.
        captions = [image.caption for element in at.get("image") for image in element.proto.imgs]
        captions += [c.value for c in at.caption]
        assert any(c.startswith(f"test:{test} · label ") for c in captions), captions
        if test in labels:
            # The test image, and its duplicate among the candidates, both named by their class.
            assert any(c.startswith(f"test:{test} · label {labels[test]} · queue score") for c in captions), captions
            assert any(c.startswith(f"train:{dict(pairs)[test]} · label {labels[test]} · ") for c in captions), captions
        at = at.button(key="skip").click().run()
        assert not at.exception


def test_grid_captions_with_long_class_names_stay_inside_their_cells(fashion_slice_data_dir, monkeypatch):
    """"label Ankle boot · pred Ankle boot 100%" on one line widened every cell past the column, and the scaled-down
    grid's captions overlapped (widgets/image_grid.py): the label and the prediction now take a line each there."""
    import json

    from widgets.image_grid import CAPTION_CHARS

    monkeypatch.setenv(DATA_DIR_ENV, str(fashion_slice_data_dir))
    run = Run(fashion_slice_data_dir / "runs" / RUN)
    at = open_app({"run": RUN}, "dataset")
    assert not at.exception and not at.error, [e.value for e in at.error]
    grids = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (grid,) = [figure for figure in grids if figure["data"][0]["type"] == "image"]
    texts = grid["data"][1]["text"]
    assert texts
    # The page sizes its columns by the wrapped lines: 7 cells of 21 characters fit its 950 px, not 3 of 38.
    assert len(set(grid["data"][1]["x"])) == 7 and grid["layout"]["width"] <= 950
    for text in texts:
        name, *fields, caption = text.split("<br>")
        assert all(len(line) <= CAPTION_CHARS for line in (name, *fields, caption)), text
        label = run.class_names[run.labels[run.n_train + int(name[5:])] if name.startswith("test:") else
                                run.labels[int(name[6:])]]
        assert fields[0] == f"label {label}" and fields[1].startswith("pred "), text

"""RunAPI.similar in every stored space, against brute force (scikit-learn's exact cosine neighbours, numpy's
Pearson correlation), and the embeddings map's colourings against the run's own arrays."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from backend.api import MissingArtifact, open_run
from backend.store.schema import SSL_EMBEDDINGS

K = 7
TARGETS = ["train:0", "train:123", "test:0", "test:77"]


@pytest.fixture(scope="module")
def run_dir(structure_run, tmp_path_factory):
    """The structure run with SSL embeddings (random: only their geometry matters here)."""
    out = tmp_path_factory.mktemp("similar") / "run"
    shutil.copytree(structure_run, out)
    n = open_run(out).run.n_targets
    SSL_EMBEDDINGS.path(out).parent.mkdir(parents=True)
    np.save(SSL_EMBEDDINGS.path(out), np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32))
    return out


def cosine_oracle(x: np.ndarray, column: int, k: int) -> dict[int, float]:
    """{row: cosine} of the k rows nearest row `column` (itself left out), by scikit-learn's exact search."""
    x = x.reshape(len(x), -1).astype(np.float64)
    distance, rows = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x[column:column + 1])
    return {int(r): 1 - float(d) for r, d in zip(rows[0], distance[0]) if r != column}


def assert_matches(api, target: str, found: list[tuple[str, float]], oracle: dict[int, float], k: int) -> None:
    """The found similarities are the oracle's k best, in order, and each found target has the oracle's similarity
    (ties may swap which of two equal targets comes first)."""
    best = sorted(oracle.values(), reverse=True)[:k]
    np.testing.assert_allclose([s for _, s in found], best, atol=1e-5)
    assert target not in [name for name, _ in found]
    for name, similarity in found:
        assert oracle[api.column(name)] == pytest.approx(similarity, abs=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_every_space_equals_brute_force(run_dir, target):
    api = open_run(run_dir)
    column, n = api.column(target), api.run.n_targets
    assert api.similarity_spaces() == ["datamodels", "representation", "pixels", "ssl"]
    weights = np.load(run_dir / "weights.npy")
    features = np.load(run_dir / "control_features.npy")
    ssl = np.load(SSL_EMBEDDINGS.path(run_dir))
    for by, matrix in (("datamodels", weights), ("representation", features), ("ssl", ssl)):
        k = K if by != "datamodels" else 10  # analyze stored 10 neighbours
        assert_matches(api, target, api.similar(target, k, by), cosine_oracle(matrix, column, n - 1), k)
    # Pixels: the Pearson correlation of the two images' pixels.
    pixels = np.asarray(api.run.images, dtype=np.float64).reshape(n, -1)
    correlation = np.corrcoef(pixels)[column]
    oracle = {j: float(correlation[j]) for j in range(n) if j != column and np.isfinite(correlation[j])}
    assert_matches(api, target, api.similar(target, K, "pixels"), oracle, K)


def test_bad_space_and_missing_space_name_the_fix(structure_run):
    api = open_run(structure_run)
    with pytest.raises(ValueError, match="by must be one of"):
        api.similar("test:0", 3, "colour")
    with pytest.raises(MissingArtifact, match="ssl-esvm"):
        api.similar("test:0", 3, "ssl")


def test_map_colourings_come_from_the_runs_arrays(structure_run):
    api = open_run(structure_run)
    run = api.run
    labels = np.asarray(run.labels)
    codes, names = api.map_colours("label")
    assert (codes == labels).all() and names == run.class_names
    codes, names = api.map_colours("split")
    assert names == ["train", "test"] and codes.sum() == run.n_test and (codes[run.n_train:] == 1).all()
    codes, names = api.map_colours("cluster")
    assert (codes[:run.n_train] == len(names) - 1).all()
    np.testing.assert_array_equal(codes[run.n_train:], np.load(structure_run / "structure" / "clusters_all.npy"))
    if "prediction" in api.map_colourings():
        counts = np.load(structure_run / "target_predictions.npy")
        predicted = np.array([np.flatnonzero(row == row.max())[0] for row in counts])  # ties: the lowest class
        assert (api.map_colours("prediction")[0] == predicted).all()
        assert (api.map_colours("correct")[0] == (predicted == labels)).all()

"""The embeddings map that `analyze` stores: scikit-learn's t-SNE of the stored PCA coordinates, neighbourhoods kept."""
from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE, trustworthiness
from threadpoolctl import threadpool_limits

from backend.store.run_dir import Run
from backend.store.schema import MAP_LAYOUT
from backend.structure import embeddings
from backend.structure.map_layout import map_layout


def test_the_stored_map_is_tsne_of_every_targets_pca_coordinates(structure_run):
    run = Run(structure_run)
    projections = np.asarray(embeddings.pca_projections(run))
    stored = np.asarray(run.array(MAP_LAYOUT))
    assert stored.shape == (run.n_targets, 2) and stored.dtype == np.float32
    # The oracle: scikit-learn's TSNE called directly with the documented settings.
    with threadpool_limits(1, user_api="openmp"):
        expected = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(projections)
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-3)
    # Targets near each other in the PCA coordinates stay near on the map (1.0 = every 5-NN kept).
    assert trustworthiness(projections, stored, n_neighbors=5) > 0.9


def test_the_map_does_not_depend_on_the_thread_count(structure_run):
    projections = np.asarray(embeddings.pca_projections(Run(structure_run)))[:200]
    with threadpool_limits(1):
        one = map_layout(projections)
    with threadpool_limits(2):
        two = map_layout(projections)
    np.testing.assert_array_equal(one, two)


def test_tiny_inputs_still_get_a_map():
    assert map_layout(np.zeros((2, 5))).shape == (2, 2)
    assert np.isfinite(map_layout(np.random.default_rng(0).normal(size=(5, 3)))).all()

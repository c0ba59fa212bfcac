"""The embeddings map that `analyze` stores: scikit-learn's t-SNE of the stored PCA coordinates, neighbourhoods kept."""
from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE, trustworthiness
from threadpoolctl import threadpool_limits

from backend.store.run_dir import Run
from backend.store.schema import MAP_LAYOUT
from backend.structure import embeddings
from backend.structure.map_layout import inside_polygon, map_layout


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


def test_inside_polygon_matches_half_planes_on_a_convex_lasso_and_on_a_star():
    """The lasso's selection: against the closed form of a convex polygon (inside every edge's half-plane, the
    vertices counter-clockwise) and, for a non-convex star about the origin, the closed form of a star-shaped
    polygon: a point is inside iff it is on the origin's side of the one edge whose wedge of angles holds it."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-2, 2, (20_000, 2))
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    hexagon = np.column_stack([np.cos(angles), np.sin(angles)]) * 1.5
    edges = np.roll(hexagon, -1, axis=0) - hexagon
    cross = edges[:, 0] * (points[:, None, 1] - hexagon[:, 1]) - edges[:, 1] * (points[:, None, 0] - hexagon[:, 0])
    np.testing.assert_array_equal(inside_polygon(points, hexagon), (cross > 0).all(axis=1))
    n = 15
    star_angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    star = np.column_stack([np.cos(star_angles), np.sin(star_angles)]) * np.where(np.arange(n) % 2, 0.6, 1.8)[:, None]
    wedge = (np.mod(np.arctan2(points[:, 1], points[:, 0]), 2 * np.pi) // (2 * np.pi / n)).astype(int) % n
    a, b = star[wedge], star[(wedge + 1) % n]
    expected = (b[:, 0] - a[:, 0]) * (points[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (points[:, 0] - a[:, 0]) > 0
    assert 2_000 < expected.sum() < 18_000
    np.testing.assert_array_equal(inside_polygon(points, star), expected)

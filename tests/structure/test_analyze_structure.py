"""analyze_structure on a real (small) run: every artifact against an independent scikit-learn/brute-force oracle."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.cluster import SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score

from backend.structure import clusters

from backend.structure import embeddings

from backend.structure import similar_targets
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.structure.analyze import analyze_structure
from tests.oracles import brute_force_knn_rbf, unit




@pytest.fixture(scope="module")
def run(structure_run):
    return Run(structure_run)


def test_artifacts_are_plain_arrays_with_documented_shapes(structure_run, run):
    n, n_train, n_test = run.n_targets, run.n_train, run.n_test
    shapes = {"pca_components.npy": (10, n_train), "pca_mean.npy": (n_train,), "pca_explained_variance.npy": (10,),
              "pca_explained_variance_ratio.npy": (10,), "pca_projections.npy": (n, 10),
              "representation_explained_variance_ratio.npy": (10,),
              "clusters_by_class.npy": (n_test,), "layout_by_class.npy": (n_test, 2), "silhouette_by_class.npy": (n_test,),
              "clusters_all.npy": (n_test,), "layout_all.npy": (n_test, 2), "silhouette_all.npy": (n_test,),
              "neighbors.npy": (n, 10), "neighbor_similarity.npy": (n, 10), "map_layout.npy": (n, 2)}
    for name, shape in shapes.items():
        assert np.load(structure_run / "structure" / name, mmap_mode="r", allow_pickle=False).shape == shape, name
    summary = json.loads((structure_run / "structure" / "summary.json").read_text())
    assert summary["pca"]["fit_targets"] == n_train and summary["embedding_space"].startswith("exact")


def test_pca_is_sklearns_pca_of_the_unit_training_embeddings(structure_run, run):
    w = unit(np.load(structure_run / "weights.npy"))
    sk = PCA(n_components=10, svd_solver="full").fit(w[:run.n_train])
    np.testing.assert_allclose(embeddings.pca_components(run), sk.components_, atol=1e-4)
    np.testing.assert_allclose(embeddings.explained_ratios(run)[0], sk.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(embeddings.pca_projections(run), sk.transform(w), atol=1e-4)


def test_representation_baseline_ratio_is_sklearns_on_control_features(structure_run, run):
    feats = unit(np.load(structure_run / "control_features.npy"))
    sk = PCA(n_components=10, svd_solver="full").fit(feats[:run.n_train])
    np.testing.assert_allclose(embeddings.explained_ratios(run)[1], sk.explained_variance_ratio_, rtol=1e-3)


def test_whole_set_and_pixel_nmi_match_an_independent_sklearn_clustering(structure_run, run):
    quality = clusters.load_quality(run)
    labels = np.asarray(run.labels[run.n_train:])
    whole = clusters.whole_clustering(run)
    assert np.isclose(quality["whole"]["nmi"], normalized_mutual_info_score(labels, whole.labels))
    pixels = unit(np.asarray(run.images[run.n_train:], dtype=np.float64).reshape(run.n_test, -1))
    affinity, gamma = brute_force_knn_rbf(pixels, 10)
    theirs = SpectralClustering(len(run.class_names), affinity="precomputed", random_state=0).fit_predict(affinity)
    assert np.isclose(quality["pixels"]["gamma"], gamma, rtol=1e-4)
    assert np.isclose(quality["pixels"]["nmi"], normalized_mutual_info_score(labels, theirs), atol=0.02)


def test_every_class_has_its_own_clustering_consistent_with_its_quality(run):
    quality = clusters.load_quality(run)
    assert [q["class"] for q in quality["per_class"]] == list(range(len(run.class_names)))
    for q in quality["per_class"]:
        members, clustering = clusters.class_clustering(run, q["class"])
        assert (np.asarray(run.labels[run.n_train:])[members] == q["class"]).all()
        assert q["sizes"] == np.bincount(clustering.labels, minlength=q["k"]).tolist() and q["k"] == 3
        assert np.isclose(q["silhouette"], clustering.silhouette.mean(), atol=1e-6)


def test_neighbors_are_the_brute_force_cosine_neighbours(structure_run, run):
    w = unit(np.load(structure_run / "weights.npy"))
    sim = w @ w.T
    np.fill_diagonal(sim, -np.inf)
    for column in (0, run.n_train - 1, run.n_train, run.n_targets - 1):
        got, got_sim = similar_targets.similar_to(run, column)
        np.testing.assert_allclose(got_sim, np.sort(sim[column])[::-1][:10], atol=1e-5)
        np.testing.assert_allclose(sim[column, got], got_sim, atol=1e-5)


def test_rerun_is_deterministic_reports_progress_and_honours_fit_rows_and_sketch(structure_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(structure_run, copy)
    seen = []
    summary = analyze_structure(Run(copy), n_components=10, k_per_class=3, device="cpu", progress=lambda *call: seen.append(call))
    done = [d for d, _, _ in seen]
    assert seen[0] == (0, 7, "stage") and done == sorted(done) and done[-1] == pytest.approx(7)
    assert {(t, u) for _, t, u in seen} == {(7, "stage")}
    assert list(summary["peak_rss_mib"]) == list(summary["seconds"]) and summary["neighbors"]["index"].startswith("exact cosine")
    for name in ("pca_projections.npy", "map_layout.npy", "clusters_all.npy", "neighbors.npy"):
        np.testing.assert_array_equal(np.load(copy / "structure" / name), np.load(structure_run / "structure" / name))
    summary = analyze_structure(Run(copy), n_components=4, k_per_class=2, device="cpu", fit_rows=120, sketch_dim=128,
                                n_neighbors=3)
    assert summary["pca"]["fit_targets"] == 120 and summary["embedding_space"].startswith("count sketch")
    assert np.load(copy / "structure" / "neighbors.npy").shape == (Run(copy).n_targets, 3)
    assert clusters.load_quality(Run(copy))["per_class"][0]["k"] == 2


def test_a_run_without_datamodels_is_refused_with_the_fix(tiny_run):
    with pytest.raises(RunError, match="weights.npy is missing"):
        analyze_structure(Run(tiny_run), device="cpu")


def test_pages_get_a_clear_error_before_analyze(tiny_run):
    with pytest.raises(RunError, match="precompute analyze"):
        embeddings.pca_components(Run(tiny_run))
    with pytest.raises(RunError, match="precompute analyze"):
        clusters.load_quality(Run(tiny_run))


def test_a_test_only_fit_fits_the_pca_on_the_test_targets_and_maps_only_fitted_ones(structure_run, tmp_path):
    """`fit --targets test` leaves the training targets unfitted (NaN λ, zero weights): the PCA then comes from
    the fitted test targets (sklearn's PCA of their unit rows), and the map has NaN exactly at unfitted targets."""
    copy = tmp_path / "run"
    shutil.copytree(structure_run, copy)
    run = Run(copy)
    lam, w = np.load(copy / "lam.npy"), np.load(copy / "weights.npy")
    unfitted = np.zeros(run.n_targets, dtype=bool)
    unfitted[:run.n_train] = True
    unfitted[run.n_train + 3] = True  # one unfitted test target too
    lam[unfitted], w[unfitted] = np.nan, 0
    np.save(copy / "lam.npy", lam)
    np.save(copy / "weights.npy", w)
    summary = analyze_structure(Run(copy), n_components=4, k_per_class=2, device="cpu")
    assert summary["pca"]["fit_on"] == "test" and summary["pca"]["fit_targets"] == run.n_test - 1
    sk = PCA(n_components=4, svd_solver="full").fit(unit(w[~unfitted]))
    np.testing.assert_allclose(np.abs(embeddings.pca_components(Run(copy))), np.abs(sk.components_), atol=1e-4)
    layout = np.load(copy / "structure" / "map_layout.npy")
    np.testing.assert_array_equal(np.isnan(layout).any(axis=1), unfitted)
    assert np.isfinite(layout[~unfitted]).all()
    lam[:] = np.nan
    np.save(copy / "lam.npy", lam)
    with pytest.raises(RunError, match="no fitted target: fit some with `.*precompute fit"):
        analyze_structure(Run(copy), device="cpu")

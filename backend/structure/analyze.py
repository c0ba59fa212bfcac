"""The `analyze` structure stage: PCA, spectral clusters and similar targets of a run's datamodels.

analyze_structure writes into RUN/structure/: the PCA of datamodel embeddings (fit on the training
targets, §4.3), its explained variance beside the representation baseline's, the embeddings map (a 2-D
t-SNE of every target's PCA coordinates), spectral clusters of the test targets per class and for the whole
test set (App. I), and every target's nearest targets.
"""
from __future__ import annotations

import resource
import time

import numpy as np

from backend.progress import Progress, part
from backend.store.run_dir import Run


# The analysis's stages, each one unit of progress ("stage"); the read of the weights, the PCA fit and
# the projection report their rows, passes and blocks as fractions of their stage.
STAGES = ("control", "read", "pca", "project", "representation", "map", "clusters", "neighbors")


def analyze_structure(run: Run, n_components: int = 50, k_per_class: int = 5, progress: Progress | None = None,
                      device: str = "auto", *, k_whole: int | None = None, n_neighbors: int = 10,
                      fit_rows: int | None = None, sketch_dim: int = 2048, n_iter: int = 5, seed: int = 0) -> dict:
    """Compute and write the run's structure artifacts (see README "structure/"); return a JSON-able summary.

    run        : a run holding weights.npy (backend.store.run_dir.Run, as every stage takes its run)
    fit_rows   : fit the PCA on this many of its targets drawn at random (default: all of them): the fitted
                 training targets, or the fitted test targets when no training target is fitted
    sketch_dim : embeddings longer than this are count-sketched to it for clustering (neighbours are exact)
    k_whole    : clusters for the whole test set (default: the number of classes)
    progress   : counts the stages done ("stage"; backend.progress), fractional inside the PCA and projection
    The representation baseline is the penultimate features of control model 0 (backend/training/control.py);
    if the run has no control models yet, one is trained.
    """
    import torch

    from backend.datamodels.queries import fitted_targets
    from backend.structure import clusters

    from backend.structure import embeddings
    from backend.structure import map_layout

    from backend.structure import similar_targets
    from backend.training.control import ensure_control, load_control_features
    from backend.store.artifacts import write_json
    from backend.store.errors import RunError
    from backend.store.schema import CONTROL_FEATURES, CONTROL_MARGINS, LAM, STRUCTURE_SUMMARY, WEIGHTS
    from backend.training.engine import resolve_device, use_all_cores

    dev = resolve_device(device)
    if dev.type == "cpu":
        use_all_cores()
    weights = run.array(WEIGHTS)
    need_control = not (run.has(CONTROL_MARGINS) and run.has(CONTROL_FEATURES))
    stages = [s for s in STAGES if need_control or s != "control"]

    def within(name: str) -> Progress | None:
        return part(progress, stages.index(name), 1, len(stages), "stage")

    def at(name: str, share: float = 1.0) -> None:
        if progress:
            progress(stages.index(name) + share, len(stages), "stage")

    if progress:
        progress(0, len(stages), "stage")
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}  # this process's CPU time, all threads: wall time on a shared machine is the load's
    peak_rss_mib: dict[str, int] = {}
    clock, cpu_clock = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu_clock
        seconds[name] = round(time.perf_counter() - clock, 2)
        cpu_seconds[name] = round(time.process_time() - cpu_clock, 2)
        peak_rss_mib[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # the peak so far
        clock, cpu_clock = time.perf_counter(), time.process_time()

    if need_control:
        ensure_control(run, 1, device=device)  # one model: its features are the baseline
        at("control")
        lap("control")

    # One pass over weights.npy: every unit embedding held in memory (sparse when the datamodels are), so
    # the PCA's passes, the projection and the neighbour search never read the file again.
    held = embeddings.HeldEmbeddings(embeddings.EmbeddingRows(weights, device=dev), progress=within("read"))
    lap("read")

    # §4.3: PCA of the unit-normalised training-target embeddings. Unfitted targets (`fit --targets`) have
    # all-zero weights and carry no direction: the PCA uses the fitted training targets, or, when a fit covers
    # no training target (`make fashion` fits `--targets test`), the fitted test targets.
    fitted = fitted_targets(run.array(LAM))
    if not fitted.any():
        raise RunError(f"run {run.dir} has no fitted target: fit some with `{WEIGHTS.command(run.dir)}`")
    fit_on = "train" if fitted[:run.n_train].any() else "test"
    pca_rows = np.flatnonzero(fitted[:run.n_train]) if fit_on == "train" else run.n_train + np.flatnonzero(
        fitted[run.n_train:])
    if fit_rows is not None and fit_rows < len(pca_rows):
        pca_rows = np.sort(np.random.default_rng(seed).choice(pca_rows, size=fit_rows, replace=False))
    pca = embeddings.fit_pca(embeddings.EmbeddingRows(held, pca_rows, device=dev), n_components,
                             n_iter=n_iter, seed=seed, progress=within("pca"))
    lap("pca_fit")

    # One pass over every target: its PCA coordinates and its vector for clustering and neighbours.
    projections, vectors = embeddings.embed_targets(embeddings.EmbeddingRows(held, device=dev), pca, sketch_dim,
                                                    seed, progress=within("project"))
    lap("project")

    features = load_control_features(run)
    representation = embeddings.fit_pca(embeddings.EmbeddingRows(features, np.arange(run.n_train), device=dev),
                                        n_components, n_iter=n_iter, seed=seed)
    at("representation")
    embeddings.save_pca(run.dir, pca, projections, representation)
    lap("representation")

    # The embeddings map: every fitted target on one 2-D map, from its PCA coordinates; unfitted ones are NaN.
    layout = np.full((len(fitted), 2), np.nan, dtype=np.float32)
    layout[fitted] = map_layout.map_layout(projections[fitted], seed)
    map_layout.save_layout(run.dir, layout)
    at("map")
    lap("map")

    # App. I: spectral clusters of the test targets, per class and for the whole test set; raw pixels
    # clustered by the identical procedure as the reference.
    labels = np.asarray(run.labels)
    test_labels = labels[run.n_train:]
    test_vectors = torch.from_numpy(vectors[run.n_train:]).to(dev)
    per_class = clusters.cluster_each_class(test_vectors, test_labels, k_per_class, seed)
    at("clusters", 0.4)
    k_whole = k_whole or len(run.class_names)
    whole = clusters.spectral_clusters(test_vectors, k_whole, seed)
    at("clusters", 0.7)
    pixels = torch.from_numpy(np.asarray(run.images[run.n_train:], dtype=np.float32).reshape(run.n_test, -1)).to(dev)
    pixel_clusters = clusters.spectral_clusters(embeddings.unit_rows(pixels), k_whole, seed)
    at("clusters")
    quality = {
        "affinity": f"RBF on the symmetrised {clusters.N_NEIGHBORS}-nearest-neighbour graph, gamma = 1 / median "
                    "squared distance over its edges",
        "per_class": [dict(per_class[c].quality(), **{"class": c, "name": run.class_names[c]}) for c in sorted(per_class)],
        "whole": dict(whole.quality(), nmi=clusters.nmi(whole, test_labels)),
        "pixels": dict(pixel_clusters.quality(), nmi=clusters.nmi(pixel_clusters, test_labels)),
    }
    clusters.save_clusterings(run.dir, test_labels, per_class, whole, quality)
    lap("clusters")

    neighbors, similarity = similar_targets.nearest_targets(held, n_neighbors)
    similar_targets.save_neighbors(run.dir, neighbors, similarity)
    at("neighbors")
    lap("neighbors")

    summary = _summary(pca, representation, quality, n_components=n_components, fit_targets=len(pca_rows),
                       fit_on=fit_on, mapped=int(fitted.sum()),
                       width=vectors.shape[1], n_train=run.n_train,
                       n_neighbors=neighbors.shape[1], neighbor_search=held.kind, k_per_class=k_per_class,
                       seconds=seconds, cpu_seconds=cpu_seconds, peak_rss_mib=peak_rss_mib,
                       device=str(dev))
    write_json(run.dir, STRUCTURE_SUMMARY, summary)
    return summary


def _summary(pca, representation, quality: dict, *, n_components, fit_targets, fit_on, mapped, width, n_train,
             n_neighbors, neighbor_search, k_per_class, seconds, cpu_seconds, peak_rss_mib, device) -> dict:
    from backend.structure.embeddings import components_for

    def spectrum(p) -> dict:
        ratio = p.explained_variance_ratio
        return {"n_components": len(ratio), "variance_explained": round(float(ratio.sum()), 4),
                "components_for_50pct": components_for(ratio, 0.5), "components_for_90pct": components_for(ratio, 0.9)}

    def count(n: int | None, p) -> str:
        return f"{n}" if n is not None else f"> {len(p.explained_variance_ratio)}"

    dm, rep = spectrum(pca), spectrum(representation)
    silhouettes = [q["silhouette"] for q in quality["per_class"] if q["silhouette"] is not None]
    return {
        "pca": dict(dm, fit_targets=fit_targets, fit_on=fit_on, n_components_requested=n_components),
        "representation": rep,
        "effective_dimensionality": (
            f"components for 50% / 90% of variance: datamodel embeddings {count(dm['components_for_50pct'], pca)} / "
            f"{count(dm['components_for_90pct'], pca)}, representation baseline "
            f"{count(rep['components_for_50pct'], representation)} / {count(rep['components_for_90pct'], representation)}"),
        "clusters": {
            "k_per_class": k_per_class,
            "mean_silhouette_per_class": round(float(np.mean(silhouettes)), 4) if silhouettes else None,
            "whole_test_set": {"k": quality["whole"]["k"], "nmi_datamodels": round(quality["whole"]["nmi"], 4),
                               "nmi_raw_pixels": round(quality["pixels"]["nmi"], 4),
                               "silhouette": quality["whole"]["silhouette"]},
        },
        "embedding_space": (f"count sketch of the unit embeddings to {width} dims" if width < n_train
                            else f"exact unit embeddings ({width} dims)"),
        "map": f"2-D t-SNE (scikit-learn, Barnes-Hut, perplexity 30, PCA init) of the {mapped} fitted targets' "
               f"coordinates on the {len(pca.components)} components (unfitted targets: NaN, not drawn)",
        "neighbors": {"k": n_neighbors, "index": f"exact cosine in all {n_train} dims ({neighbor_search})"},
        "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mib": peak_rss_mib, "device": device,
    }

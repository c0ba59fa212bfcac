"""What a run finds, written as the README reports it: results.md, results.json and pictures in one folder.

    leak_hits       how many real near-duplicate pairs each leakage list ranks in its top 10, the queue in its first 100
    flagged         the training images each method's self-scores flag first
    stage_records   per stage: wall, CPU seconds, peak RSS and load, from the run's records and a GNU time log
    write_results   all of it, with pictures of the top pairs, the flagged images, the clusters and the PCA components

It reads several stages' artifacts (leakage/, structure/, attribution/), so it sits under api alone, beside
target_table. The near-duplicate pairs are a real dataset's ground truth (`precompute near-duplicates`, e.g.
data/fashion-mnist/near_duplicates.csv), in the run's own test and training positions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from backend.attribution.store import available, read_meta, read_self_scores
from backend.attribution.yardsticks import flipped_labels
from backend.leakage.duplicates import read_pairs
from backend.ranking import top_k
from backend.store.artifacts import read_json
from backend.store.atomic import atomic_path
from backend.store.run_dir import Run
from backend.store.schema import (ANALYSIS, CLUSTERS_ALL, FIT, LEAKAGE_LISTS, LEAKAGE_QUEUE, METHODS_EVAL,
                                  PCA_EXPLAINED_RATIO, PCA_PROJECTIONS, SILHOUETTE_ALL)
from backend.structure.embeddings import extremes

# The candidate lists the README scores, by the name it gives them, and how deep each is read.
LEAK_LISTS = {"top weights": "weight_top", "features": "feature_nn", "pixels": "pixel_nn", "combined": "combined"}
LIST_DEPTH = 10
QUEUE_DEPTH = 100
FLAGGED = 10        # training images per method in the self-score picture
PAIRS_SHOWN = 16    # near-duplicate pairs in the pairs picture
PER_GROUP = 8       # images per cluster or per end of a principal component
COMPONENTS = 4      # principal components pictured
SCALE = 3           # pixels per image pixel in the pictures (28 x 28 -> 84 x 84)


def leak_hits(lists: dict[str, np.ndarray], queue: np.ndarray, pair_test: np.ndarray, pair_train: np.ndarray,
              depth: int = LIST_DEPTH, queue_depth: int = QUEUE_DEPTH) -> dict:
    """Per list (int64 (n_test, k) training positions, -1 empty), the pairs (j, i) with i in its row j's first
    `depth`; for the queue (int64 (n_test,)), the pairs and the distinct test images among its first `queue_depth`."""
    hits = {name: int((rows[pair_test, :depth] == pair_train[:, None]).any(axis=1).sum()) for name, rows in lists.items()}
    head = queue[:queue_depth]
    return {"lists": hits, "list_depth": depth, "queue_pairs": int(np.isin(pair_test, head).sum()),
            "queue_test_images": int(np.intersect1d(head, pair_test).size), "queue_depth": queue_depth,
            "pairs": int(len(pair_test)), "test_images": int(np.unique(pair_test).size)}


def flagged(self_scores: np.ndarray, k: int = FLAGGED) -> np.ndarray:
    """int64 (≤ k,): the training positions of the k largest self-scores (likeliest mislabelled first), by
    backend.ranking's unsigned rule: ties by position, NaN never."""
    return top_k(np.asarray(self_scores, dtype=np.float64), k, signed=False)


TIME_LINE = re.compile(r"^(?P<command>.*)\|wall=(?P<wall>[\d.]+)\|user=(?P<user>[\d.]+)\|sys=(?P<sys>[\d.]+)"
                       r"\|maxrss_kb=(?P<rss>\d+)(?:\|load=(?P<load>[^|]*))?$")
TIME_FORMAT = "%C|wall=%e|user=%U|sys=%S|maxrss_kb=%M"


def stage_name(command: str) -> str:
    """`... -m precompute attribute --run R --method trak` -> 'attribute trak'; the verb and, for attribute, its method."""
    words = command.split()
    if "precompute" not in words:
        return command[:60]
    rest = words[words.index("precompute") + 1:]
    name = rest[0] if rest else command[:60]
    if "--method" in rest[:-1]:
        name += " " + rest[rest.index("--method") + 1]
    if name == "train" and "--out" in rest[:-1] and Path(rest[rest.index("--out") + 1]).name == "heldout":
        name += " (held-out)"
    return name


def stage_records(run: Run, times: Path | None = None) -> list[dict]:
    """One row per stage: wall and CPU seconds, peak RSS in MiB and the load, None where unrecorded.

    The run records the wall seconds of fit (fit.json), analyze (analysis.json; its structure half per part with
    CPU and peak RSS too) and every method (its meta.json). A log of `/usr/bin/time -a -o LOG -f TIME_FORMAT`
    lines (an optional `|load=...` appended) adds every stage it timed, in its order, and its rows take precedence."""
    rows = []
    fit = read_json(run.dir, FIT, missing_ok=True)
    if fit and "wall_time_s" in fit:
        rows.append({"stage": "fit", "wall_s": fit["wall_time_s"], "cpu_s": None, "peak_rss_mib": None, "load": None})
    analysis = read_json(run.dir, ANALYSIS, missing_ok=True)
    if analysis and "seconds" in analysis:
        structure = analysis.get("structure", {})
        cpu = structure.get("cpu_seconds")
        rss = structure.get("peak_rss_mib")
        rows.append({"stage": "analyze", "wall_s": analysis["seconds"],
                     "cpu_s": None if not cpu else round(sum(cpu.values()), 1),
                     "peak_rss_mib": None if not rss else max(rss.values()), "load": None,
                     "note": "CPU and RSS of its structure half" if cpu else None})
    for method in available(run):
        rows.append({"stage": f"attribute {method}", "wall_s": read_meta(run, method).get("seconds"), "cpu_s": None,
                     "peak_rss_mib": None, "load": None})
    if times is not None:
        timed = {}
        for line in Path(times).read_text().splitlines():
            m = TIME_LINE.match(line.strip())
            if m:
                timed[stage_name(m["command"])] = {
                    "stage": stage_name(m["command"]), "wall_s": float(m["wall"]),
                    "cpu_s": round(float(m["user"]) + float(m["sys"]), 1),
                    "peak_rss_mib": int(m["rss"]) // 1024, "load": m["load"]}
        rows = list(timed.values()) + [r for r in rows if r["stage"] not in timed]
    return rows


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def grid_png(path: Path, rows: list[tuple[str, list[tuple[np.ndarray, str]]]]) -> None:
    """A picture of images in rows: each row a title on its left and (uint8 (H, W, C) image, caption) cells."""
    from PIL import Image, ImageDraw

    font = _font()
    cells = [cell for _, row in rows for cell in row]
    h, w = cells[0][0].shape[:2]
    cell_w, cell_h, title_w, caption_h = max(w * SCALE, 96), h * SCALE + 26, 150, 26
    width = title_w + cell_w * max(len(row) for _, row in rows)
    canvas = Image.new("RGB", (width, cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, row) in enumerate(rows):
        top = r * cell_h
        for i, line in enumerate(_wrap(title, 24)[:4]):
            draw.text((4, top + 4 + 12 * i), line, fill="black", font=font)
        for c, (image, caption) in enumerate(row):
            picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
            picture = picture.resize((w * SCALE, h * SCALE), Image.NEAREST)
            left = title_w + c * cell_w
            canvas.paste(picture, (left, top))
            for i, line in enumerate(_wrap(caption, 16)[:2]):
                draw.text((left, top + h * SCALE + 1 + 12 * i), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]) + "\n"


def write_results(run_dir: str | Path, out_dir: str | Path, pairs: str | Path | None = None,
                  times: str | Path | None = None) -> dict:
    """Write out_dir/results.md, results.json and the pictures (pairs.png, flagged.png, clusters.png, pca.png),
    each section from the artifacts the run holds (a missing stage's section says which command adds it).
    Returns results.json's contents."""
    run, out = Run(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, names, n = run.images, run.labels, run.class_names, run.n_train
    md = [f"# Results of run {run.name}\n", f"{run.manifest.get('n_models')} models, mean test accuracy "
          f"{run.manifest.get('mean_test_accuracy')}\n"]
    report = {"run": str(run.dir), "n_models": run.manifest.get("n_models"),
              "mean_test_accuracy": run.manifest.get("mean_test_accuracy")}

    def label(target: int) -> str:
        return names[int(labels[target])]

    # Leakage: the ground-truth pairs against every list and the queue.
    if pairs is not None:
        pair_test, pair_train, rms = read_pairs(pairs)
        if len(pair_test) and (pair_test.max() >= run.n_test or pair_train.max() >= n):
            raise ValueError(f"{pairs} names test {pair_test.max()} or train {pair_train.max()}, beyond this run's "
                             f"{run.n_test} test and {n} training images: it is another dataset's pair list")
        md.append(f"## Leakage: {len(pair_test)} real near-duplicate pairs ({Path(pairs).name})\n")
        if run.has(LEAKAGE_QUEUE):
            lists = {name: np.asarray(run.array(LEAKAGE_LISTS[file])) for name, file in LEAK_LISTS.items()}
            hits = leak_hits(lists, np.asarray(run.array(LEAKAGE_QUEUE)), pair_test, pair_train)
            report["leakage"] = hits
            md.append(_table(["list", f"pairs in its top {LIST_DEPTH}"],
                             [[name, f"{h} / {hits['pairs']}"] for name, h in hits["lists"].items()]
                             + [[f"queue, first {QUEUE_DEPTH}", f"{hits['queue_pairs']} / {hits['pairs']} pairs "
                                 f"({hits['queue_test_images']} / {hits['test_images']} test images)"]]))
        else:
            md.append("No leakage lists yet: `python -m precompute analyze --run RUN` writes them.\n")
        shown = list(zip(pair_test, pair_train, rms))[:PAIRS_SHOWN]
        if shown:
            grid_png(out / "pairs.png", [(f"RMS {d:.2f} {label(n + t)}",
                                          [(images[n + t], f"test {t}"), (images[r], f"train {r}")])
                                         for t, r, d in shown])
            md.append(f"![the nearest pairs](pairs.png)\n")

    # Label issues: each method's self-scores, flagged first.
    flipped = flipped_labels(run)
    flipped = set(flipped.tolist()) if isinstance(flipped, np.ndarray) else None
    rows, report["flagged"] = [], {}
    for method in available(run):
        own = read_self_scores(run, method)
        if own is None:
            continue
        top = flagged(np.asarray(own))
        report["flagged"][method] = top.tolist()
        rows.append((method, [(images[i], f"{i} {label(i)}" + (" FLIPPED" if flipped and i in flipped else ""))
                                for i in top]))
    if rows:
        grid_png(out / "flagged.png", rows)
        md.append("## Training images flagged first by each method's self-scores (the given label)\n")
        md.append("![flagged](flagged.png)\n")

    # Held-out LDS and mislabel AUC per method.
    evaluation = read_json(run.dir, METHODS_EVAL, missing_ok=True)
    if evaluation:
        report["methods"] = {name: {"lds": m["lds"]["mean"], "mislabel_auc": m.get("mislabel_auc"),
                                    "seconds": m["cost"]["seconds"]} for name, m in evaluation["methods"].items()}
        md.append("## Held-out LDS and mislabel AUC per method (methods_eval.json)\n")
        md.append(_table(["method", "held-out LDS", "mislabel AUC", "scores' seconds"],
                         [[k, v["lds"], v["mislabel_auc"], v["seconds"]]
                          for k, v in sorted(report["methods"].items(), key=lambda kv: -(kv[1]["lds"] or -9))]))

    # Structure: the clusters of the whole test set and the principal components' two ends.
    if run.has(CLUSTERS_ALL):
        clusters, silhouette = np.asarray(run.array(CLUSTERS_ALL)), np.asarray(run.array(SILHOUETTE_ALL))
        rows = []
        for c in np.unique(clusters):
            members = np.flatnonzero(clusters == c)
            typical = members[top_k(silhouette[members], PER_GROUP, signed=False)]
            counts = np.bincount(labels[n + members], minlength=len(names))
            rows.append((f"cluster {c}: {len(members)} images, {counts.max() / len(members):.0%} "
                         f"{names[counts.argmax()]}", [(images[n + j], label(n + j)) for j in typical]))
        grid_png(out / "clusters.png", rows)
        md.append("## Clusters of the test set's datamodels (most typical members: highest silhouette)\n")
        md.append("![clusters](clusters.png)\n")
    if run.has(PCA_PROJECTIONS):
        projections, ratio = run.array(PCA_PROJECTIONS), np.asarray(run.array(PCA_EXPLAINED_RATIO))
        rows = []
        for c in range(min(COMPONENTS, projections.shape[1])):
            # The test targets' two ends as the PCA page ranks them (api.pc_extremes: embeddings.extremes).
            top, bottom = extremes(np.asarray(projections[n:, c]), PER_GROUP)
            for end, ids in (("+", top), ("-", bottom)):
                rows.append((f"PC {c} {end} ({ratio[c]:.1%} of variance)",
                             [(images[n + j], f"test {j} {label(n + j)}") for j in ids]))
        grid_png(out / "pca.png", rows)
        report["pca_explained_variance_ratio"] = ratio[:COMPONENTS].tolist()
        md.append("## Principal components of datamodel space: the test targets at each end\n")
        md.append("![pca](pca.png)\n")

    # Cost per stage.
    stages = stage_records(run, Path(times) if times else None)
    report["stages"] = stages
    if stages:
        md.append("## Per stage: wall, CPU, peak RSS, load\n")
        md.append(_table(["stage", "wall s", "CPU s", "peak RSS MiB", "load"],
                         [[s["stage"] + (f" ({s['note']})" if s.get("note") else ""), s["wall_s"], s["cpu_s"],
                           s["peak_rss_mib"], s["load"]] for s in stages]))
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(md))
    return report

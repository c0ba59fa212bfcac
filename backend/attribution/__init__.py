"""Attribution methods behind one interface: each turns a run into scores [n_test, n_train].

A method is a class with a `name`, its `config` and `models` (JSON, recorded in meta.json), and two
steps: `prepare(progress)` (train or load what scoring needs) and `score(rows)` (float32 scores of the
test targets `rows` against every training image; positive = the image raises the target's margin), and
`self_scores()` (one per training image from the same models, higher = likelier mislabelled).
`backend.attribution.compute.attribute` runs any of them in resumable blocks and stores the result.

    base, methods        the interface and registry; the methods by CLI name, imported when made
    compute, store       resumable scoring into attribution/<method>/; reading stored scores
    datamodels           the fitted weights as scores
    difference_of_means  Table 5's diff-of-means and empirical-influence
    representation       control-model feature cosine, signed by label agreement
    ssl, ssl_esvm        SimCLR encoder; exemplar SVMs on its embeddings (seed 002)
    gradients            per-example gradients, projections, snapshots of retrained models
    trak, influence, tracin  the gradient methods; defaults holds their settings without torch
    yardsticks           methods-eval: LDS, certified supports, mislabel AUC, cost
    selection            methods-eval --select: each method's main knob chosen on validation held-out models
"""

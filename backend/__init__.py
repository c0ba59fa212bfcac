"""The datamodels explorer library, one sub-package per stage of the data's one-way trip.

    store            the run directory: its schema, the one atomic write, the manifest, shards, row reads,
                     provenance, the run catalogue, target names
    datasets         loading and validating datasets (digits, CIFAR-10, npz, image folders), fingerprints
    training         the batched engine and the models of a run: masks and margins, control models, retraining
    datamodels       LASSO datamodels fitted from masks to margins, their evaluation (LDS, Table 5), queries
    structure        datamodel embeddings: PCA, spectral clusters, similar targets, faithfulness checks
    counterfactuals  removal sets, predicted and retrained effects, data support, the Figure 8 evaluation
    leakage          train-test leak candidates, the annotation store, leak scores and annotator agreement
    attribution      every attribution method behind one interface (datamodels, TRAK, IF, TracIn, ...) and
                     the yardsticks that judge them side by side
    importers        runs built from published results (the datamodels-data release), above the stages they write
    cluster          executors a stage runs its chunks on: this process, or Ray for `train --ray` and `fit --ray`
                     (beside the trip: handed to stages, it imports none)
    access           the dashboard's users: auth modes, roles, names, the retraining budget (beside the trip, not a stage)

Layers point one way: each package imports only those below it, an order pyproject.toml's import-linter contract
states and tests/test_layers.py checks.

progress.py holds the one progress convention every long job reports in; ranking.py the one top-k (and its
rule for zero and negative scores); api.py, the top of the package, the public API by target name (open_run).
"""

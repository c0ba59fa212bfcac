"""The datamodels explorer library, one sub-package per stage of the data's one-way trip.

    store            the run directory: its schema, atomic writes, row reads, the run catalogue, target names
    datasets         loading and validating datasets (digits, CIFAR-10, npz, image folders), fingerprints
    training         the batched engine and the models of a run: masks and margins, control models, retraining
    datamodels       LASSO datamodels fitted from masks to margins, their evaluation (LDS, Table 5), queries
    structure        datamodel embeddings: PCA, spectral clusters, similar targets, faithfulness checks
    counterfactuals  removal sets, predicted and retrained effects, data support, the Figure 8 evaluation
    leakage          train-test leak candidates, the annotation store, leak scores and annotator agreement
    attribution      every attribution method behind one interface (datamodels, TRAK, IF, TracIn, ...) and
                     the yardsticks that judge them side by side
    cluster          Ray as the engine of `train --ray` and `fit --ray` (beside the trip: it runs stages)
    access           the dashboard's users: auth modes, roles, the retraining budget (beside the trip, not a stage)

progress.py holds the one progress convention every long job reports in; ranking.py the one top-k (and its
rule for zero and negative scores); api.py, the top of the package, the public API by target name (open_run).
"""

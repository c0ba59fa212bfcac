"""Every seed stream of a run in one table, and the seeds drawn from them, so no two draws share a stream.

A stream is the last entry of the SeedSequence a draw starts from: SeedSequence([run_seed, index, stream])
for one model of a family, SeedSequence([seed, stream]) for a one-off draw. Distinct streams give
independent draws, so a control or retrained model never repeats a run model's seed.
"""
from __future__ import annotations

import numpy as np

SUBSET_STREAM = 0           # run model i's training subset (subsets.model_subset)
MODEL_STREAM = 1            # run model i's initialisation, shuffling and augmentation (subsets.model_seed)
VALIDATION_STREAM = 7       # the models a datamodel fit holds out for validation (datamodels.fit.validation_split)
CONTROL_STREAM = 0xC0       # control models trained on the full training set (training.control)
COUNTERFACTUAL_STREAM = 0xCF  # models retrained without a removal set (counterfactuals.predict)
TEST_TARGETS_STREAM = 0xE7  # the test targets a counterfactual evaluation samples (counterfactuals.evaluation)
# models retrained without a principal component's extremes (structure.faithfulness); model i of every
# removal set shares seed i, so the positive- and negative-side retrains differ only in their data
FAITHFULNESS_STREAM = 0xFA
SSL_STREAM = 0x55           # the self-supervised encoder of the ssl-esvm attribution (attribution.ssl)
PROJECTION_STREAM = 0x7A    # TRAK's random projection of the gradients, one for every model (attribution.gradients.Projector)


def stream_seed(run_seed: int, index: int, stream: int) -> int:
    """A 63-bit seed for model `index` of `stream`, from SeedSequence([run_seed, index, stream])."""
    state = np.random.SeedSequence([run_seed, index, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def stream_seeds(run_seed: int, stream: int, start: int, n: int) -> list[int]:
    """63-bit seeds of models [start, start + n) of a seed stream (`stream_seed`)."""
    return [stream_seed(run_seed, index, stream) for index in range(start, start + n)]

import numpy as np
import pytest

from backend.training import seeds
from backend.training.subsets import model_seed, model_subset


def stream_constants() -> dict[str, int]:
    return {name: value for name, value in vars(seeds).items() if name.endswith("_STREAM")}


def test_streams_are_pairwise_distinct():
    streams = stream_constants()
    assert len(streams) == 9
    assert len(set(streams.values())) == len(streams), streams


@pytest.mark.parametrize("run_seed, index, stream", [(0, 0, 1), (0, 3, 0xC0), (7, 11, 0xCF), (123, 0, 0xFA)])
def test_stream_seed_is_the_63_bit_fold_of_seed_sequence(run_seed, index, stream):
    hi, lo = (int(x) for x in np.random.SeedSequence([run_seed, index, stream]).generate_state(2, np.uint32))
    expected = (hi << 31) ^ lo
    assert seeds.stream_seed(run_seed, index, stream) == expected
    assert 0 <= expected < 2 ** 63


def test_stream_seeds_are_consecutive_stream_seeds():
    assert seeds.stream_seeds(5, seeds.CONTROL_STREAM, 2, 3) == [seeds.stream_seed(5, i, 0xC0) for i in (2, 3, 4)]


def test_run_models_keep_their_streams():
    hi, lo = (int(x) for x in np.random.SeedSequence([0, 4, 1]).generate_state(2, np.uint32))
    assert model_seed(0, 4) == (hi << 31) ^ lo
    rng = np.random.default_rng(np.random.SeedSequence([0, 4, 0]))
    np.testing.assert_array_equal(model_subset(0, 4, 20, 0.5), np.sort(rng.choice(20, size=10, replace=False)))


def test_retrained_models_never_repeat_a_run_models_seed():
    run = {model_seed(0, i) for i in range(2000)}
    for stream in (seeds.CONTROL_STREAM, seeds.COUNTERFACTUAL_STREAM, seeds.FAITHFULNESS_STREAM):
        assert run.isdisjoint(seeds.stream_seeds(0, stream, 0, 2000))

"""--source-weight: a source's shapes come K times per pass over the data, still read chunk by chunk."""

from collections import Counter

import numpy as np
import pytest

from vat.training.options import parse_source_weight
from vat.training.schedule import ShardBatches, source_repeats


class Chunks:
    """The one thing ShardBatches reads of a data set: the chunk of each item."""

    def __init__(self, chunk_of_item):
        self.chunk_of_item = np.asarray(chunk_of_item)

    def chunk_of_items(self):
        return self.chunk_of_item


def epoch_draws(sampler, steps):
    batches = iter(sampler)
    return [index for _ in range(steps) for index, _ in next(batches)]


def test_repeated_items_come_k_times_per_epoch_and_chunks_stay_together():
    records = [{"source": s} for s in ["a", "b", "b", "a", "c", "b", "a", "a"]]
    chunks = Chunks([0, 0, 0, 1, 1, 1, 2, 2])
    repeats = source_repeats(records, {"b": 3})
    np.testing.assert_array_equal(repeats, [1, 3, 3, 1, 1, 3, 1, 1])
    sampler = ShardBatches(chunks, batch_size=2, rank=0, world=1, seed=5, start_step=0, repeats=repeats)
    assert sampler.epoch_length == 14
    draws = epoch_draws(sampler, 7)  # exactly one epoch
    assert Counter(draws) == {i: int(k) for i, k in enumerate(repeats)}
    chunk_sequence = [int(chunks.chunk_of_item[i]) for i in draws]
    runs = [c for j, c in enumerate(chunk_sequence) if j == 0 or c != chunk_sequence[j - 1]]
    assert sorted(runs) == [0, 1, 2]  # each chunk read in one stretch
    # No weights: the plain epoch, every item once.
    plain = ShardBatches(chunks, batch_size=2, rank=0, world=1, seed=5, start_step=0)
    assert sorted(epoch_draws(plain, 4)) == list(range(8))
    # Resuming at step 3 replays what the uninterrupted run drew from step 3 on.
    resumed = ShardBatches(chunks, batch_size=2, rank=0, world=1, seed=5, start_step=3, repeats=repeats)
    assert epoch_draws(resumed, 4) == draws[6:14]


def test_a_weight_must_name_a_source_and_a_whole_number():
    with pytest.raises(SystemExit, match="names sh3d, which no training shape has.*sources: a, b"):
        source_repeats([{"source": "a"}, {"source": "b"}], {"sh3d": 2})
    assert parse_source_weight("sweethome3d=4") == ("sweethome3d", 4)
    for bad in ("sweethome3d", "sweethome3d=0", "sweethome3d=1.5", "=2"):
        with pytest.raises(Exception, match="SOURCE=K"):
            parse_source_weight(bad)

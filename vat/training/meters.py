"""Named metric sums over shapes, all-reduced by name under torch.distributed (float64, so the sum of a
rank's values does not depend on how many there are)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class Meters:
    """Sums of named values. Every name is declared up front, so that all ranks reduce the same
    names in the same order, also a rank that added nothing to some of them."""

    def __init__(self, *names: str):
        self.sums = dict.fromkeys(names, 0.0)

    def add(self, **values: float) -> None:
        for name, value in values.items():
            if name not in self.sums:
                raise KeyError(f"{name!r} is not one of the declared meters {list(self.sums)}")
            self.sums[name] += float(value)

    def all_reduce(self) -> "Meters":
        """Sum every name over the ranks (a no-op in a single process)."""
        if dist.is_initialized():
            # NCCL reduces only CUDA tensors, gloo CPU ones: put the sums where the backend wants them.
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            packed = torch.tensor(list(self.sums.values()), dtype=torch.float64, device=device)
            dist.all_reduce(packed)
            self.sums = dict(zip(self.sums, packed.tolist()))
        return self

    def __getitem__(self, name: str) -> float:
        return self.sums[name]

    def means(self, names, count: str) -> dict[str, float]:
        """{name: sum / the sum of `count`} (a count of 0 divides by 1)."""
        n = max(1.0, self.sums[count])
        return {name: self.sums[name] / n for name in names}

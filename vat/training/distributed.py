"""torchrun/DDP set-up, the device, replica checks and deterministic per-step seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


def select_device(choice: str, index: int | None = None) -> torch.device:
    """The device of a --device choice (auto: CUDA when there is one), `index` for the CUDA device of a rank."""
    if choice not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {choice!r}")
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def setup_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = select_device(device_choice, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def rank_of_process() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_rows(x_NC: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, concatenated (all ranks pass the same shape)."""
    if not dist.is_initialized():
        return x_NC
    parts = [torch.empty_like(x_NC) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x_NC.contiguous())
    return torch.cat(parts)


def state_digest(*modules: nn.Module) -> str:
    """sha256 of the modules' state: replicas that trained in lockstep have equal digests."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replica_digests(step: int, *modules: nn.Module) -> list[str]:
    """Every rank's state_digest of the modules; raises if the replicas differ."""
    digest = state_digest(*modules)
    digests = [None] * world_size()
    if dist.is_initialized():
        dist.all_gather_object(digests, digest)
    else:
        digests = [digest]
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged at step {step}: {digests}")
    return digests


def encoder_fingerprints(encoders) -> dict:
    """{"image"/"text": {"config": its config, "digest": state_digest}} of the encoders present in a
    ConditionEncoders (None: {}): features cached by train/prepare_generator_data.py are used in
    training only when they came from the very same frozen encoder."""
    if encoders is None:
        return {}
    return {name: {"config": dataclasses.asdict(encoder.config), "digest": state_digest(encoder)}
            for name, encoder in (("image", encoders.image), ("text", encoders.text)) if encoder is not None}


def step_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])

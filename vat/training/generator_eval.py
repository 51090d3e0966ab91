"""Stage-2 scores: teacher-forced loss and token accuracy of the generator, with mismatched and image-only
conditions, teacher-forced retrieval, and the token accuracy of greedy sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vat.models.gpt import image_retrieval_losses, retrieval_scores
from vat.training.distributed import rank_of_process, world_size
from vat.training.meters import Meters

if TYPE_CHECKING:
    from vat.training.generator import Conditions, Trainee
    from vat.training.generator_data import GeneratorShapes


def split_scales(tokens_BL: torch.Tensor, tokens_per_scale: tuple[int, ...]) -> list[torch.Tensor]:
    return list(tokens_BL.split(list(tokens_per_scale), dim=1))


def token_accuracy(logits_BLV: torch.Tensor, tokens_BL: torch.Tensor, tokens_per_scale) -> tuple[float, list[float]]:
    """Share of all tokens whose argmax is right, and the same per scale."""
    right_BL = (logits_BLV.argmax(-1) == tokens_BL).float()
    return right_BL.mean().item(), [part.mean().item() for part in right_BL.split(list(tokens_per_scale), dim=1)]


@torch.no_grad()
def evaluate(trainee: Trainee, shapes: GeneratorShapes, conditions: Conditions, quantizer, max_shapes: int,
             generate: int, device: torch.device, autocast) -> dict[str, float]:
    """Teacher-forced loss and per-scale token accuracy (no condition dropout: eval mode) over the
    first max_shapes shapes (view 0); the loss with the next shape's conditions instead
    (loss_mismatched: above `loss` only if the generator reads its conditions); with both conditions,
    the same two with the image alone (loss_image_only, loss_image_only_mismatched: how the demo and
    eval-gen use it); teacher-forced retrieval of each shape's coarse tokens by its own image among all of
    them (retrieval_top1, retrieval_rank: see image_retrieval_losses); and the token accuracy of greedy
    sampling (top_k = 1, the default guidance) for the first `generate` of them; averaged over shapes and ranks."""
    rank, world = rank_of_process(), world_size()
    was_training = trainee.training
    trainee.eval()
    tokens_per_scale = trainee.generator.config.tokens_per_scale
    per_scale = [f"acc_scale_{s + 1:02d}" for s in range(len(tokens_per_scale))]
    meters = Meters("loss", "loss_mismatched", "acc", *per_scale, "shapes", "generated_acc", "generated",
                    "loss_image_only", "loss_image_only_mismatched", "image_only_shapes")
    count = min(max_shapes, len(shapes))
    seen = []  # (tokens, teacher-forcing input, image tokens) of every shape, for retrieval
    for index in range(count):
        batch = {k: v[None].to(device) for k, v in shapes[index].items()}
        tokens_BL = batch.pop("tokens")
        x_BLC = quantizer.teacher_forcing_input(split_scales(tokens_BL, tokens_per_scale))
        kwargs = conditions(batch)
        has_image = "views" in kwargs or "image_BNC" in kwargs
        image_BNC = trainee.encoders.encode_images(kwargs["views"]) if "views" in kwargs else kwargs.get("image_BNC")
        if has_image:
            seen.append((tokens_BL, x_BLC, image_BNC))
        if index % world != rank:
            continue
        other = {k: v[None].to(device) for k, v in shapes[(index + 1) % count].items() if k != "tokens"}
        with autocast:
            logits = trainee(x_BLC, **kwargs).float()
            mismatched = trainee(x_BLC, **conditions(other)).float()
        meters.add(loss_mismatched=F.cross_entropy(mismatched.flatten(0, 1), tokens_BL.flatten()).item())
        if has_image and any(k in kwargs for k in ("text_BC", "text_ids")):
            for name, given in (("loss_image_only", kwargs), ("loss_image_only_mismatched", conditions(other))):
                alone = {k: v for k, v in given.items() if k not in ("text_BC", "text_ids")}
                with autocast:
                    image_logits = trainee(x_BLC, **alone).float()
                meters.add(**{name: F.cross_entropy(image_logits.flatten(0, 1), tokens_BL.flatten()).item()})
            meters.add(image_only_shapes=1)
        accuracy, scales = token_accuracy(logits, tokens_BL, tokens_per_scale)
        meters.add(**dict(zip(per_scale, scales)), acc=accuracy,
                   loss=F.cross_entropy(logits.flatten(0, 1), tokens_BL.flatten()).item(), shapes=1)
        if index < generate:
            text_BC = kwargs.get("text_BC")  # image_BNC: encoded above
            if "text_ids" in kwargs:
                text_BC = trainee.encoders.encode_text_ids(kwargs["text_ids"])
            with autocast:
                sampled = trainee.generator.generate(quantizer, image_BNC, text_BC, top_k=1, seed=index)
            meters.add(generated_acc=(torch.cat(sampled, dim=1) == tokens_BL).float().mean().item(), generated=1)
    meters.all_reduce()
    result = {**meters.means(("loss", "loss_mismatched", "acc", *per_scale), count="shapes"),
              **retrieval(trainee, seen, autocast, rank, world)}
    trainee.train(was_training)
    if meters["image_only_shapes"] > 0:
        result.update(meters.means(("loss_image_only", "loss_image_only_mismatched"), count="image_only_shapes"))
    if meters["generated"] > 0:
        result.update(meters.means(("generated_acc",), count="generated"))
    return result


def retrieval(trainee, seen: list, autocast, rank: int, world: int) -> dict[str, float]:
    """Teacher-forced retrieval among the validation shapes (retrieval_scores; {} with fewer than two
    shapes with an image); `seen`: (tokens, teacher-forcing input, image tokens) of every shape, ranks
    split the images."""
    if len(seen) <= 1:
        return {}
    tokens_NL, x_NLC, image_NMC = (torch.cat(part) for part in zip(*seen))
    with autocast:
        loss_NN = image_retrieval_losses(trainee.generator, tokens_NL, x_NLC, image_NMC, rank, world)
    if dist.is_initialized():
        dist.all_reduce(loss_NN)
    return retrieval_scores(loss_NN)

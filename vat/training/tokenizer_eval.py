"""Stage-1 scores: IoU, accuracy, BCE and CS-IoU of a tokenizer on shapes, and the surface levels fitted
on training shapes that the exported model extracts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vat import metrics
from vat.models.tokenizer import VAT
from vat.training.distributed import rank_of_process, world_size
from vat.training.meters import Meters
from vat.training.tokenizer_data import ShapeSamples, scoring_tensors

# The scores of a quantised and of an unquantised pass (evaluate's result keys; "cs_iou" with the first).
QUANTIZED = ("iou", "acc", "bce")
UNQUANTIZED = ("iou_unquantized", "acc_unquantized", "bce_unquantized")


@torch.no_grad()
def evaluate(model: VAT, shapes: ShapeSamples, max_shapes: int, device: torch.device, bf16: bool = False,
             quantized: bool = True) -> dict[str, float]:
    """IoU and accuracy (vat.metrics) over each shape's fresh queries (all stored ones of a held-out
    set), inside = occupancy > 0.5, predicted inside = logit > 0, and the threshold-free BCE against
    the semi-continuous labels; without quantisation and, if `quantized` (phase 2: the codebook is
    trained), with it, then also CS-IoU (the mean IoU decoded from the first s scales over all s);
    averaged over shapes (and ranks)."""
    rank, world = rank_of_process(), world_size()
    was_training = model.training
    model.eval()
    meters = Meters(*QUANTIZED, *UNQUANTIZED, "cs_iou", "shapes")
    fresh = shapes.fresh_queries()
    for index in range(rank, min(max_shapes, len(shapes)), world):
        points, normals, queries, labels = scoring_tensors(shapes, index, fresh, device)
        inside = labels.cpu().numpy() > 0.5
        for names, quantize in ((QUANTIZED, True), (UNQUANTIZED, False)) if quantized else ((UNQUANTIZED, False),):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                result = model(points, normals, queries, quantize=quantize)
            logits = result["logits"][0].float()
            pred = (logits > 0).cpu().numpy()
            meters.add(**dict(zip(names, (metrics.iou(pred, inside), metrics.accuracy(pred, inside),
                                          F.binary_cross_entropy_with_logits(logits, labels).item()))))
            if quantize:  # CS-IoU: the prefixes of this pass's tokens (eval mode: the latent means, as encode)
                indices, full_iou = result["indices"], metrics.iou(pred, inside)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    ious = [metrics.iou((model.field.query(model.decode_indices(indices[:s]), queries)[0] > 0)
                                        .cpu().numpy(), inside) for s in range(1, len(indices))]
                meters.add(cs_iou=metrics.cs_iou([*ious, full_iou]))
        meters.add(shapes=1)
    meters.all_reduce()
    model.train(was_training)
    return meters.means((*QUANTIZED, *UNQUANTIZED, "cs_iou") if quantized else UNQUANTIZED, count="shapes")


@torch.no_grad()
def calibrate_surface(model: VAT, shapes: ShapeSamples, max_shapes: int, device: torch.device, bf16: bool,
                      quantized: bool) -> list[float]:
    """The logit levels whose sign gives the best mean IoU over the fresh queries (all stored ones when
    none are reserved) of `max_shapes` training shapes spread evenly over the set: the surfaces the
    exported model extracts. Quantised: one level per decoded prefix (entry s - 1: the first s scales,
    the last: all of them); otherwise one level for the unquantised field. Fitted on training shapes
    only, never on held-out ones. Same on every rank."""
    was_training = model.training
    model.eval()
    levels = torch.arange(-3.0, 3.0001, 0.05)
    fresh = shapes.fresh_queries()
    ious = []  # per shape: [prefixes, levels]
    for index in np.unique(np.linspace(0, len(shapes) - 1, min(max_shapes, len(shapes))).round().astype(int)):
        points, normals, queries, labels = scoring_tensors(shapes, int(index), fresh, device)
        inside = labels > 0.5
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if quantized:
                indices = model.encode(points, normals)
                logits = [model.field.query(model.decode_indices(indices[:s]), queries)[0].float()
                          for s in range(1, len(indices) + 1)]
            else:
                logits = [model(points, normals, queries, quantize=False)["logits"][0].float()]
        pred_PLQ = torch.stack(logits)[:, None] > levels.to(device)[None, :, None]
        intersection, union = (pred_PLQ & inside).sum(2), (pred_PLQ | inside).sum(2)
        ious.append(torch.where(union > 0, intersection / union.clamp(min=1), 1.0).cpu())
    model.train(was_training)
    if not ious:
        return [0.0]
    return [round(float(levels[i]), 4) for i in torch.stack(ious).mean(0).argmax(1)]  # float32 steps of 0.05

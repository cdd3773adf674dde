"""Pictures for TensorBoard: the decision boundary over the input plane, drawn with plain tensors.

The look of the TensorFlow Playground: each pixel coloured by the predicted class probabilities, the
training points on top. Imported only by runs that draw, so others pay nothing.
"""

from __future__ import annotations

import torch

from nnrun.data import Dataset
from nnrun.losses import Loss

# Class colours (RGB 0-1): orange and blue as in the Playground, then more for multi-class data.
PALETTE = torch.tensor([
    [0.96, 0.58, 0.20], [0.13, 0.47, 0.71], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
    [0.58, 0.40, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50],
])
SIZE = 200  # pixels per side


def plane(points: torch.Tensor, size: int = SIZE, margin: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A size x size grid covering the points (plus a margin); returns (grid points (size², 2), lo, hi)."""
    lo, hi = points.min(0).values, points.max(0).values
    pad = (hi - lo).clamp_min(1e-3) * margin
    lo, hi = lo - pad, hi + pad
    xs = torch.linspace(float(lo[0]), float(hi[0]), size)
    ys = torch.linspace(float(hi[1]), float(lo[1]), size)  # image row 0 is the top: largest x2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), lo, hi


def colour_by_proba(proba: torch.Tensor, size: int) -> torch.Tensor:
    """(size², K) probabilities -> (3, size, size) image, pale where the net is unsure."""
    k = proba.shape[1]
    rgb = proba @ PALETTE[:k]
    confidence = proba.max(1).values.unsqueeze(1)  # 1/K .. 1
    weight = ((confidence - 1.0 / k) / (1 - 1.0 / k)).clamp(0, 1) * 0.65 + 0.2
    rgb = weight * rgb + (1 - weight) * torch.ones(3)
    return rgb.T.reshape(3, size, size)


def draw_points(image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor,
                hi: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Each point a square of its class colour with a white rim, in place on a (3, H, W) image."""
    _, h, w = image.shape
    col = ((points[:, 0] - lo[0]) / (hi[0] - lo[0]) * (w - 1)).round().long()
    row = ((hi[1] - points[:, 1]) / (hi[1] - lo[1]) * (h - 1)).round().long()
    for r, c, label in zip(row.tolist(), col.tolist(), labels.tolist()):
        r0, r1, c0, c1 = max(r - radius - 1, 0), min(r + radius + 2, h), max(c - radius - 1, 0), min(c + radius + 2, w)
        image[:, r0:r1, c0:c1] = 1.0
        image[:, max(r - radius, 0):min(r + radius + 1, h), max(c - radius, 0):min(c + radius + 1, w)] = \
            PALETTE[label % len(PALETTE)].view(3, 1, 1)
    return image


@torch.no_grad()
def decision_boundary(model: torch.nn.Module, loss: Loss, points: torch.Tensor, labels: torch.Tensor,
                      size: int = SIZE) -> torch.Tensor:
    """(3, size, size) uint8: the model's class probabilities over the plane of `points`, points on top."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    grid, lo, hi = plane(points.cpu(), size)
    proba = loss.proba(model(grid.to(device))).float().cpu()
    model.train(was_training)
    image = draw_points(colour_by_proba(proba, size), points.cpu(), labels.cpu(), lo, hi)
    return (image.clamp(0, 1) * 255).to(torch.uint8)


def log_epoch(logger, model: torch.nn.Module, data: Dataset, loss: Loss, epoch: int) -> None:
    """The pictures of one epoch: the decision boundary with the training points."""
    logger.image("decision_boundary", decision_boundary(model, loss, data.train.x, data.train.y), epoch)

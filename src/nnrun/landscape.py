"""The loss landscape around the trained weights (Li et al. 2017, "Visualizing the Loss Landscape of Neural Nets"),
drawn once at the end of a run with `train.landscape=true`: the loss on a grid θ* + a·d1 + b·d2 of two random,
filter-normalised directions (each unit's row scaled to the norm of its trained weights, so a step of 1 changes
every unit by its own size; biases get none), as a heatmap with contour lines, the trained weights marked."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from nnrun.data import Split
from nnrun.losses import Loss
from nnrun.models import evaluating
from nnrun.pictures import SIZE, to_uint8  # the same size as the run's other pictures
from nnrun.tensorboard_events import PICTURES

STEPS = 41  # grid points per axis (odd, so the trained weights sit on the centre point)
SPAN = 1.0  # the grid covers a, b in [-SPAN, SPAN]
LEVELS = 12  # contour lines
SEED = 0  # the directions are random but the same for every run: pictures of two runs compare
TAG = f"{PICTURES}/loss_landscape"  # TensorBoard's image tag, beside the run's other pictures
# Viridis at a few stops (dark blue = low loss, yellow = high), interpolated linearly.
VIRIDIS = torch.tensor([
    [0.267, 0.005, 0.329], [0.283, 0.141, 0.458], [0.254, 0.265, 0.530], [0.207, 0.372, 0.553],
    [0.164, 0.471, 0.558], [0.128, 0.567, 0.551], [0.135, 0.659, 0.518], [0.267, 0.749, 0.441],
    [0.478, 0.821, 0.318], [0.741, 0.873, 0.150], [0.993, 0.906, 0.144],
])


def filter_normalised_direction(params: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction shaped like `params`: each weight row scaled to its trained row's norm, biases zero."""
    direction = {}
    for name, p in params.items():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator).to(p.device, p.dtype).reshape(len(p), -1)
        scale = p.reshape(len(p), -1).norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-10)
        direction[name] = (d * scale).reshape(p.shape)
    return direction


@torch.no_grad()
def surface(model: torch.nn.Module, loss: Loss, split: Split, steps: int = STEPS) -> torch.Tensor:
    """(steps, steps) loss values; row i is b = +SPAN .. -SPAN (top to bottom), column j is a = -SPAN .. +SPAN."""
    generator = torch.Generator().manual_seed(SEED)
    trained = {name: p.detach() for name, p in model.named_parameters()}
    d1, d2 = (filter_normalised_direction(trained, generator) for _ in range(2))
    device = next(model.parameters()).device
    alphas = torch.linspace(-SPAN, SPAN, steps, device=device)

    def loss_at(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss.fn(functional_call(model, params, (split.x,)), split.y)

    rows = []
    with evaluating(model):
        for b in torch.linspace(SPAN, -SPAN, steps, device=device):  # a row at a time: its weights in one pass
            rows.append(vmap(loss_at)({name: p + alphas.view(-1, *[1] * p.dim()) * d1[name] + b * d2[name]
                                       for name, p in trained.items()}))
    return torch.stack(rows).float().cpu()


def picture(losses: torch.Tensor) -> torch.Tensor:
    """(3, SIZE, SIZE) uint8: log-loss heatmap in viridis, white contour lines, a red cross on the trained weights."""
    finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, float("inf")))
    top = finite[torch.isfinite(finite)].max() if torch.isfinite(finite).any() else torch.tensor(1.0)
    log_loss = torch.log(finite.clamp(min=1e-8, max=float(top)))  # log: the basin and the walls both show
    scaled = (log_loss - log_loss.min()) / (log_loss.max() - log_loss.min()).clamp_min(1e-8)
    smooth = F.interpolate(scaled[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=True)[0, 0]
    position = smooth.clamp(0, 1) * (len(VIRIDIS) - 1)
    low = position.floor().long().clamp(max=len(VIRIDIS) - 2)
    frac = (position - low).unsqueeze(-1)
    image = (VIRIDIS[low] * (1 - frac) + VIRIDIS[low + 1] * frac).permute(2, 0, 1)
    # Contour lines: where the band index (the level a pixel lies in) changes from its neighbour.
    band = (smooth * LEVELS).floor()
    edge = torch.zeros_like(band, dtype=torch.bool)
    edge[:, 1:] |= band[:, 1:] != band[:, :-1]
    edge[1:, :] |= band[1:, :] != band[:-1, :]
    image = torch.where(edge, image * 0.3 + 0.7, image)
    c, arm = SIZE // 2, max(SIZE // 40, 2)
    red = torch.tensor([0.86, 0.15, 0.15]).view(3, 1, 1)
    image[:, c - 1:c + 2, c - arm:c + arm + 1] = red
    image[:, c - arm:c + arm + 1, c - 1:c + 2] = red
    return to_uint8(image)


def log(logger, model: torch.nn.Module, loss: Loss, split: Split, epoch: int) -> None:
    """Log the loss landscape of `model` on `split` as the image `TAG` at step `epoch`."""
    logger.image(TAG, picture(surface(model, loss, split)), epoch)

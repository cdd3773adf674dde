"""Pictures for TensorBoard: the decision boundary and the lecture's XOR panels, drawn with plain tensors.

The look of the TensorFlow Playground: each pixel coloured by the predicted class probabilities, the training points
on top. A net with a hidden layer also gets the lecture's three panels: the original data, the data after the
non-linear transformation (the last hidden layer's activations), and there the output layer's linear classification.
Images are (3, SIZE, SIZE) uint8 laid out pixel by pixel, (H, W, 3) in memory, as PNG wants them."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from nnrun.data import Split
from nnrun.losses import Loss
from nnrun.models import evaluating
from nnrun.tensorboard_events import PICTURES

# Class colours (RGB 0-1): orange and blue as in the Playground, then more for multi-class data.
PALETTE = torch.tensor([
    [0.96, 0.58, 0.20], [0.13, 0.47, 0.71], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
    [0.58, 0.40, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50],
])
SIZE = 200  # pixels per side
# The net is evaluated on GRID x GRID points of the plane and the colours upsampled to SIZE: a quarter of the
# forward passes of one per pixel, and no visible difference (the boundary is smooth at this scale).
GRID = 100
POINT_SHADE = 0.8  # points a little darker than their class's region, so they show on top of it
# TensorBoard tags: under `pictures/`, after the curves (see nnrun.tensorboard_events); XOR panels in lecture order.
BOUNDARY = f"{PICTURES}/decision_boundary"
ORIGINAL, HIDDEN, CLASSIFIED = (f"{PICTURES}/xor_1_original_data", f"{PICTURES}/xor_2_hidden_space",
                                f"{PICTURES}/xor_3_linear_classification")


def plane(points: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A size x size grid covering the points (plus a margin); returns (grid points (size², 2), lo, hi)."""
    lo, hi = points.min(0).values, points.max(0).values
    pad = (hi - lo).clamp_min(1e-3) * 0.25
    lo, hi = lo - pad, hi + pad
    xs = torch.linspace(float(lo[0]), float(hi[0]), size)
    ys = torch.linspace(float(hi[1]), float(lo[1]), size)  # image row 0 is the top: largest x2
    return torch.cartesian_prod(ys, xs).flip(1), lo, hi  # (x1, x2) row by row


def colour_by_proba(proba: torch.Tensor, size: int) -> torch.Tensor:
    """(size², K) probabilities -> (3, size, size) float image, pale where the net is unsure, pixel by pixel."""
    k = proba.shape[1]
    rgb = proba @ PALETTE[:k]  # (size², 3): pixel by pixel
    weight = ((proba.amax(1, keepdim=True) - 1.0 / k) / (1 - 1.0 / k)).clamp_(0, 1).mul_(0.65).add_(0.2)
    rgb = rgb.mul_(weight).add_(1 - weight)  # weight * rgb + (1 - weight) * white
    return rgb.view(size, size, 3).permute(2, 0, 1)


def heatmap(proba: torch.Tensor) -> torch.Tensor:
    """(GRID², K) probabilities over the plane -> uint8 background: coloured at the GRID x GRID points, made uint8,
    then upsampled. Upsampling uint8 pixels laid out pixel by pixel is torch's fast path, a quarter of the time of
    upsampling floats; a pixel comes out within one level of that."""
    # (1, 3, GRID, GRID) by way of (1, GRID, GRID, 3), so that the batch's stride too tells torch it is channels last.
    pixels = to_uint8(colour_by_proba(proba, GRID)).permute(1, 2, 0)[None].permute(0, 3, 1, 2)
    return F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", align_corners=True)[0]


def white() -> torch.Tensor:
    return torch.full((SIZE, SIZE, 3), 255, dtype=torch.uint8).permute(2, 0, 1)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A float 0..1 image as uint8 0..255 (clamped, truncated), in the same layout."""
    return (image.clamp(0, 1) * 255).to(torch.uint8)


class Marks(NamedTuple):
    """Where points go on an image: flat pixel indices of their white rims and fills, the fills' colours (3, fills)."""

    rim: torch.Tensor
    fill: torch.Tensor
    colours: torch.Tensor

    def draw(self, image: torch.Tensor) -> torch.Tensor:
        """The points on a (3, H, W) image (float or uint8), in place; rims first, so none hides a neighbour's fill."""
        rim, colours = (1.0, self.colours) if image.is_floating_point() else (255, to_uint8(self.colours))
        pixels = image.permute(1, 2, 0).view(-1, 3)  # a view in either layout: (H, W) stay mergeable
        pixels[self.rim] = rim
        pixels[self.fill] = colours.T
        return image


def point_marks(points: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, h: int,
                w: int) -> Marks:
    """Each point a square of its class colour with a white rim, on an h x w image of the plane lo..hi: big for
    XOR's four points, small for hundreds. All at once (a loop over hundreds would cost more than the net)."""
    radius = 6 if len(points) <= 16 else 3 if len(points) <= 100 else 2
    col = ((points[:, 0] - lo[0]) / (hi[0] - lo[0]) * (w - 1)).round().long()
    row = ((hi[1] - points[:, 1]) / (hi[1] - lo[1]) * (h - 1)).round().long()
    offsets = torch.arange(-radius - 1, radius + 2)
    dr, dc = torch.meshgrid(offsets, offsets, indexing="ij")  # one square's pixels, rim included
    rows, cols = row.view(-1, 1, 1) + dr, col.view(-1, 1, 1) + dc  # (N, k, k)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    fill = inside & (dr.abs() <= radius) & (dc.abs() <= radius)
    pixel = rows * w + cols
    colours = (POINT_SHADE * PALETTE[labels % len(PALETTE)]).view(-1, 1, 1, 3).expand(*pixel.shape, 3)
    filled, fill_colours = pixel[fill], colours[fill]
    # Where squares overlap, the later point's colour: only each pixel's last fill is kept, so the picture does
    # not depend on the order in which a multi-threaded index_put happens to write duplicates.
    order = torch.arange(len(filled))
    last = torch.full((h * w,), -1, dtype=order.dtype).scatter_reduce_(0, filled, order, "amax")
    last_fill = last[filled] == order
    return Marks(pixel[inside], filled[last_fill], fill_colours[last_fill].T)


@torch.no_grad()
def hidden_activations(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, H): what the last hidden layer makes of the inputs (eval mode: dropout off)."""
    with evaluating(model):
        return model.hidden(x)


def hidden_plane(weight: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis (2, H), centre (H,)): the plane of hidden space the panels show, for the output layer's `weight`
    (outputs, H) and the activations `h` (N, H). Width 2 (the XOR net): the two hidden units. Wider: the directions
    the output layer reads (its row for one logit, its rows' differences for several), filled up with the
    activations' main spread, so that the classification drawn is the net's (exactly up to three classes)."""
    width, centre = h.shape[1], h.mean(0)
    if width <= 2:
        return torch.eye(2, width), centre
    read = weight if weight.shape[0] == 1 else weight - weight.mean(0)
    _, sv, vt = torch.linalg.svd(read, full_matrices=False)
    axes = [row for s, row in zip(sv.tolist(), vt) if s > 1e-6 * max(sv[0].item(), 1e-12)][:2]
    if not axes:  # an output layer of zeros reads nothing: show the activations' spread instead
        axes = [torch.linalg.svd(h - centre, full_matrices=False)[2][0]]
    u = axes[0] / axes[0].norm()
    if len(axes) == 1:  # filled up with the activations' main spread across u
        spread = (h - centre) - ((h - centre) @ u).unsqueeze(1) * u
        axes.append(torch.linalg.svd(spread, full_matrices=False)[2][0])
    # The second axis made orthonormal to u; where it lies along u, any unit vector across u.
    for v in (axes[1], torch.eye(width, dtype=u.dtype)[u.abs().argmin()]):
        v = v - (v @ u) * u
        if v.norm() > 1e-6:
            return torch.stack([u, v / v.norm()]), centre


@torch.no_grad()
def hidden_space(model: torch.nn.Module, loss: Loss, points: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Panels 2 and 3: the points in the last hidden layer's space, then there the output layer's classification."""
    h = hidden_activations(model, points.to(next(model.parameters()).device)).float().cpu()
    basis, centre = hidden_plane(model.output.weight.detach().float().cpu(), h)
    projected = (h - centre) @ basis.T  # (N, 2) coordinates in the panel's plane
    grid, lo, hi = plane(projected, GRID)
    marks = point_marks(projected, labels.cpu(), lo, hi, SIZE, SIZE)  # the same points on both panels
    proba = loss.proba(plane_logits(model.output, basis, centre, grid))
    return marks.draw(white()), marks.draw(heatmap(proba))


def plane_logits(output: torch.nn.Linear, basis: torch.Tensor, centre: torch.Tensor,
                 grid: torch.Tensor) -> torch.Tensor:
    """The output layer's logits at the hidden-space points centre + grid @ basis: one linear map of the two plane
    coordinates, a fraction of the work of the layer on G points of the whole hidden width (dropout sits before it)."""
    weight, bias = output.weight.detach().float().cpu(), output.bias.detach().float().cpu()
    return F.linear(grid, weight @ basis.T, weight @ centre + bias)


class Pictures:
    """The pictures of the runs that train on one training set, as a stack's runs do: what is the data's (the input
    plane, the points' marks on it, the original-data panel) is made once, here."""

    def __init__(self, train: Split):
        self.points, self.labels = train.x, train.y
        self._runs_with_original: set = set()  # the loggers of the runs that have the original-data panel

    @functools.cached_property
    def input_plane(self) -> tuple[torch.Tensor, Marks]:
        """(GRID² points of the input plane around the training points, where those points go on a picture)."""
        grid, lo, hi = plane(self.points.cpu(), GRID)
        return grid, point_marks(self.points.cpu(), self.labels.cpu(), lo, hi, SIZE, SIZE)

    @functools.cached_property
    def original_data(self) -> torch.Tensor:
        """Panel 1: the training points in the input plane, the same for every run."""
        return self.input_plane[1].draw(white())

    @torch.no_grad()
    def decision_boundary(self, model: torch.nn.Module, loss: Loss) -> torch.Tensor:
        """The model's class probabilities over the input plane, the points on top."""
        grid, marks = self.input_plane
        with evaluating(model):
            proba = loss.proba(model(grid.to(next(model.parameters()).device))).float().cpu()
        return marks.draw(heatmap(proba))

    def log_epoch(self, logger, model: torch.nn.Module, loss: Loss, epoch: int) -> None:
        """One epoch's pictures of a run: the decision boundary; with a hidden layer, the XOR panels (any 2-D data)."""
        logger.image(BOUNDARY, self.decision_boundary(model, loss), epoch)
        if not getattr(model, "spec", {}).get("hidden"):
            return
        if logger not in self._runs_with_original:
            logger.image(ORIGINAL, self.original_data, epoch)
            self._runs_with_original.add(logger)
        hidden, classified = hidden_space(model, loss, self.points, self.labels)
        logger.image(HIDDEN, hidden, epoch)
        logger.image(CLASSIFIED, classified, epoch)

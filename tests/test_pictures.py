"""Pictures in TensorBoard: decision boundaries, the XOR panels and the loss landscape exist, have their size,
and show what they claim."""

from __future__ import annotations

import pytest
import torch
from conftest import images, parsed, train


def test_decision_boundary_images_every_image_epoch(tmp_path):
    train(["dataset=circles", "model.hidden=[8]", "train.epochs=20", "train.image_every=5",
           "train.log_every=5"], tmp_path)
    found = images(tmp_path)
    assert [(e.step, e.width, e.height) for e in found["pictures/decision_boundary"]] == \
        [(s, 200, 200) for s in (1, 5, 10, 15, 20)]


def test_perceptron_draws_no_hidden_space_panels(tmp_path):
    train(["+exp=xor_perceptron", "train.epochs=5"], tmp_path)
    assert set(images(tmp_path)) == {"pictures/decision_boundary"}


def test_hidden_space_panel_classifies_each_point_as_the_net_does():
    """In a wide net the panels show a plane of hidden space; the linear classification drawn there must put
    every projected point on the side the net puts the point itself."""
    from nnrun import losses, models, pictures

    torch.manual_seed(0)
    for loss_name, outputs in (("bce", 1), ("cross_entropy", 3)):
        loss = losses.LOSSES[loss_name]
        model = models.build(2, [16, 8], outputs, "tanh", 0.0, None, seed=3)
        x = torch.randn(50, 2)
        h = pictures.hidden_activations(model, x)
        basis, centre = pictures.hidden_plane(model.output.weight.detach(), h)
        assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)
        in_plane = centre + ((h - centre) @ basis.T) @ basis
        assert torch.equal(loss.predict(model.output(in_plane)), loss.predict(model(x)))
        # The panel's logits: the output layer at the plane's points, computed as one map of the 2 coordinates.
        grid, _, _ = pictures.plane((h - centre) @ basis.T, pictures.GRID)
        with torch.no_grad():
            want = model.output(centre + grid @ basis)
        torch.testing.assert_close(pictures.plane_logits(model.output, basis, centre, grid), want,
                                   rtol=1e-5, atol=1e-5)


def test_decision_boundary_marks_made_once_draw_the_same_picture():
    """A Pictures object makes the training points' plane and marks once: the picture is the one drawn from
    scratch, every time, and new data get their own."""
    import torch.nn.functional as F

    from nnrun import losses, models, pictures
    from nnrun.data import Split

    loss = losses.LOSSES["bce"]
    model = models.build(2, [6], 1, "tanh", 0.0, None, seed=1)
    for n in (4, 60):
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))
        y = (x[:, 0] > 0).long()
        grid, lo, hi = pictures.plane(x, pictures.GRID)
        with torch.no_grad():
            proba = loss.proba(model(grid))
        colours = pictures.to_uint8(pictures.colour_by_proba(proba, pictures.GRID))
        background = F.interpolate(colours[None], size=(200, 200), mode="bilinear", align_corners=True)[0]
        expected = pictures.point_marks(x, y, lo, hi, 200, 200).draw(background)
        drawing = pictures.Pictures(Split(x, y))
        for _ in range(2):
            assert torch.equal(drawing.decision_boundary(model, loss), expected)


class RecordingLogger:
    """What a run's logger is asked to log: [(tag, step)]."""

    def __init__(self):
        self.images: list[tuple[str, int]] = []

    def image(self, tag: str, chw, step: int) -> None:
        assert chw.shape == (3, 200, 200) and chw.dtype == torch.uint8
        self.images.append((tag, step))


def test_each_run_of_a_stack_logs_the_original_data_once_and_the_other_pictures_every_epoch():
    from nnrun import losses, models, pictures
    from nnrun.data import Split

    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    drawing = pictures.Pictures(Split(x, (x[:, 0] > 0).long()))
    runs = [RecordingLogger(), RecordingLogger()]
    model = models.build(2, [4], 1, "tanh", 0.0, None, seed=0)
    for epoch in (1, 5, 9):
        for logger in runs:
            drawing.log_epoch(logger, model, losses.LOSSES["bce"], epoch)
    for logger in runs:
        assert logger.images == [(pictures.BOUNDARY, 1), (pictures.ORIGINAL, 1), (pictures.HIDDEN, 1),
                                 (pictures.CLASSIFIED, 1),
                                 *[(tag, epoch) for epoch in (5, 9)
                                   for tag in (pictures.BOUNDARY, pictures.HIDDEN, pictures.CLASSIFIED)]]


def _reference_picture(proba: torch.Tensor, marks, size: int = 200) -> torch.Tensor:
    """The picture as plainly written: channel by channel, colours in float, then uint8 pixels upsampled, then
    the marks."""
    import torch.nn.functional as F

    from nnrun import pictures

    k = proba.shape[1]
    rgb = proba @ pictures.PALETTE[:k]
    weight = ((proba.max(1).values.unsqueeze(1) - 1.0 / k) / (1 - 1.0 / k)).clamp(0, 1) * 0.65 + 0.2
    rgb = weight * rgb + (1 - weight) * torch.ones(3)
    image = (rgb.T.reshape(3, pictures.GRID, pictures.GRID).clamp(0, 1) * 255).to(torch.uint8).contiguous()
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=True)[0].contiguous()
    flat = image.view(3, -1)
    flat[:, marks.rim] = 255
    flat[:, marks.fill] = pictures.to_uint8(marks.colours)
    return image


def test_smooth_background_is_within_a_level_of_upsampling_the_float_colours():
    """The background is coloured at GRID x GRID points, made uint8, then upsampled (torch's fast path): each
    pixel within one level of upsampling the float colours and converting after."""
    import torch.nn.functional as F

    from nnrun import pictures

    g = torch.Generator().manual_seed(7)
    for k in (2, 3, 5):
        proba = torch.softmax(torch.randn(pictures.GRID ** 2, k, generator=g) * 3, 1)
        colours = pictures.colour_by_proba(proba, pictures.GRID).contiguous()
        floats = F.interpolate(colours[None], size=(200, 200), mode="bilinear", align_corners=True)[0]
        got = pictures.heatmap(proba)
        assert got.dtype == torch.uint8 and got.permute(1, 2, 0).is_contiguous()
        assert (got.int() - pictures.to_uint8(floats).int()).abs().max() <= 1


def test_pictures_laid_out_pixel_by_pixel_equal_the_plain_channel_by_channel_drawing():
    """The pictures are made in (H, W, 3) memory, as PNG wants them, and marks drawn on uint8: the pixels must be
    those of the plain channel-by-channel drawing, for both heatmap panels and the blank ones."""
    from nnrun import losses, models, pictures
    from nnrun.data import Split

    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(5))
    y = (x[:, 0] * x[:, 1] > 0).long()
    for loss_name, outputs in (("bce", 1), ("cross_entropy", 2)):
        loss = losses.LOSSES[loss_name]
        model = models.build(2, [5], outputs, "tanh", 0.0, None, seed=2)
        grid, lo, hi = pictures.plane(x, pictures.GRID)
        with torch.no_grad():
            proba = loss.proba(model(grid))
        marks = pictures.point_marks(x, y, lo, hi, 200, 200)
        drawn = pictures.Pictures(Split(x, y)).decision_boundary(model, loss)
        assert drawn.shape == (3, 200, 200) and drawn.permute(1, 2, 0).is_contiguous()
        assert torch.equal(drawn, _reference_picture(proba, marks))

        hidden, classified = pictures.hidden_space(model, loss, x, y)
        h = pictures.hidden_activations(model, x)
        basis, centre = pictures.hidden_plane(model.output.weight.detach(), h)
        projected = (h - centre) @ basis.T
        grid, lo, hi = pictures.plane(projected, pictures.GRID)
        marks = pictures.point_marks(projected, y, lo, hi, 200, 200)
        with torch.no_grad():
            proba = loss.proba(pictures.plane_logits(model.output, basis, centre, grid))
        assert torch.equal(classified, _reference_picture(proba, marks))
        assert torch.equal(hidden, pictures.to_uint8(marks.draw(torch.ones(3, 200, 200))))


def test_overlapping_points_draw_the_same_picture_on_any_number_of_threads():
    """Squares of close points overlap; the later point's colour wins, whatever order threads write in."""
    from nnrun import pictures

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 2, generator=g)
    y = torch.randint(0, 3, (3000,), generator=g)
    lo, hi = pictures.plane(x, 200)[1:]
    threads = torch.get_num_threads()
    drawn = []
    try:
        for n in (1, 4, 1, 4):
            torch.set_num_threads(n)
            drawn.append(pictures.point_marks(x, y, lo, hi, 200, 200).draw(torch.ones(3, 200, 200)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(drawn[0], image) for image in drawn[1:])
    # The last point drawn shows its own colour at its centre.
    col = ((x[-1, 0] - lo[0]) / (hi[0] - lo[0]) * 199).round().long()
    row = ((hi[1] - x[-1, 1]) / (hi[1] - lo[1]) * 199).round().long()
    assert torch.allclose(drawn[0][:, row, col], pictures.POINT_SHADE * pictures.PALETTE[y[-1]])


def test_loss_landscape_image_and_centre_on_the_trained_weights(tmp_path):
    from nnrun import checkpoint, landscape, losses, models
    from nnrun.data import load

    result = train(["+exp=xor_relu", "train.landscape=true"], tmp_path)
    (event,) = images(tmp_path)["pictures/loss_landscape"]
    assert (event.step, event.width, event.height) == (result.epochs_run, 200, 200)

    # The grid's centre is the trained weights themselves; filter-normalised steps away only raise the loss.
    payload = checkpoint.load(tmp_path)
    spec = payload["spec"]
    model = models.MLP(spec["n_inputs"], spec["hidden"], spec["n_outputs"], spec["activation"], spec["dropout"])
    model.load_state_dict(payload["model"])
    data = load(parsed(["+exp=xor_relu"]).dataset)
    values = landscape.surface(model, losses.LOSSES["bce"], data.train, steps=11)
    assert values.shape == (11, 11)
    assert values[5, 5].item() == pytest.approx(result.final["loss/train"], rel=1e-3, abs=1e-6)
    assert values[5, 5] <= values.min() + 1e-6


def test_filter_normalised_direction_matches_each_units_norm():
    from nnrun import landscape

    params = {"w": torch.randn(4, 3) * torch.tensor([[1.0], [10.0], [0.1], [2.0]]), "b": torch.randn(4)}
    d = landscape.filter_normalised_direction(params, torch.Generator().manual_seed(0))
    assert torch.allclose(d["w"].norm(dim=1), params["w"].norm(dim=1), rtol=1e-5)
    assert torch.count_nonzero(d["b"]) == 0


def test_spirals_draws_at_epoch_1_every_100_and_where_early_stopping_ends(tmp_path):
    """+exp=spirals draws an image epoch at 1, every 100, and where early stopping ends it (the slider's last
    picture). What drawing costs is measured in benchmarks/, not here."""
    result = train(["+exp=spirals"], tmp_path)
    assert result.status == "stopped_early"
    steps = [e.step for e in images(tmp_path)["pictures/decision_boundary"]]
    assert steps == [1, *range(100, result.epochs_run + 1, 100), result.epochs_run]

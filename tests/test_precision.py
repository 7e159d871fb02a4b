"""Mixed precision and HND's sum-reduced loss: what the fp16 loss scaler does to it, and how the
finite-loss guard reads a scaled loss (precision=16-mixed; bf16-mixed has no scaler)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from hnd_lightning.callbacks import FiniteLossGuard, NonFiniteLossError
from hnd_lightning.callbacks.finite_loss import MAX_SKIPPED_STEPS
from hnd_lightning.models import build_student, build_teacher


def fp16_head_gradients(head, teacher_head, images, loss_scale: float, normalize: bool) -> dict[str, torch.Tensor]:
    """The unscaled fp32 weight gradients of HND's loss (sum-reduced, or divided by its element count) when
    backed through fp16 autocast with `loss_scale`, as GradScaler does."""
    head.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        with torch.no_grad():
            target = teacher_head(images)
        loss = F.mse_loss(head(images), target, reduction="sum")
    elements = target.numel()
    (loss / elements * (loss_scale * elements) if normalize else loss * loss_scale).backward()
    return {name: p.grad / loss_scale for name, p in head.named_parameters()}


def test_normalizing_the_sum_reduced_loss_changes_nothing_the_fp16_loss_scale_does_not():
    # The fp16 backward sees loss x scale. Dividing the papers' sum by the element count N and scaling by
    # N times more feeds it the same numbers: GradScaler, which halves its scale until nothing overflows,
    # already is the normalization (it settles about N times lower for a sum than for a mean).
    torch.manual_seed(0)
    student, teacher_head = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    head, teacher_head = student.head.train(), teacher_head.eval()
    images = torch.randn(2, 3, 32, 32)
    for scale in (2.0**-4, 2.0**8):
        summed = fp16_head_gradients(head, teacher_head, images, scale, normalize=False)
        normalized = fp16_head_gradients(head, teacher_head, images, scale, normalize=True)
        for name, gradient in summed.items():
            torch.testing.assert_close(normalized[name], gradient, rtol=2e-3, atol=0, msg=name)


class HugeGradient(pl.LightningModule):
    """A finite float32 loss whose fp16 gradient overflows at every loss scale the scaler tries."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]).float() * 1e12).sum()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_under_the_fp16_loss_scaler_the_guard_lets_it_skip_overflows_then_stops_with_the_unscaled_loss():
    torch.manual_seed(0)
    module = HugeGradient()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    loader = DataLoader(TensorDataset(torch.rand(2 * (MAX_SKIPPED_STEPS + 8), 4)), batch_size=2)
    scaler = torch.amp.GradScaler("cpu")
    trainer = pl.Trainer(
        accelerator="cpu",
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],  # what 16-mixed builds on a GPU
        callbacks=[FiniteLossGuard()],
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit(module, train_dataloaders=loader)
    message = str(raised.value)
    assert f"({MAX_SKIPPED_STEPS} steps in a row skipped by the fp16 loss scaler)" in message
    assert f"batch {MAX_SKIPPED_STEPS - 1} of the epoch" in message
    # the loss as the module computed it, not times the scale (2^16 at first)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        images = loader.dataset.tensors[0][2 * (MAX_SKIPPED_STEPS - 1) : 2 * MAX_SKIPPED_STEPS]
        expected = float((module.layer(images).float() * 1e12).sum())
    reported = float(message.split("training loss ")[1].split(")")[0])
    assert reported == pytest.approx(expected, rel=1e-5)
    # every step was skipped: no weight changed
    assert all(torch.equal(p, before[name]) for name, p in module.named_parameters())

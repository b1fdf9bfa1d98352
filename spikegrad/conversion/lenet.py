"""A LeNet-style CNN with batch-norm and max-pooling, the ANN used by the conversion experiments."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LeNet"]


class LeNet(nn.Module):
    """``[Conv k x k -> BatchNorm2d -> ReLU -> MaxPool 2] x len(channels) -> Flatten -> Linear ->
    BatchNorm1d -> ReLU -> Dropout -> Linear`` (logits).

    The defaults (channels 32, 64; hidden 1024; 28 x 28 input) have 1.11M parameters.

    Args:
        in_channels: image channels.
        image_size: height = width of the input (pixels).
        channels: output channels of the convolutions (unpadded, stride 1).
        kernel_size: convolution kernel size.
        hidden: width of the hidden fully connected layer (0: none).
        num_classes: number of logits.
        batch_norm: add batch-norm after every convolution / hidden layer.
        pool: "max" or "avg".
        dropout: dropout probability before the last layer.
    Shapes: ``forward(x [B, H, W] or [B, C, H, W]) -> logits [B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: tuple[int, ...] = (32, 64),
                 kernel_size: int = 5, hidden: int = 1024, num_classes: int = 10, batch_norm: bool = True,
                 pool: str = "max", dropout: float = 0.0):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"LeNet: pool must be 'max' or 'avg', got {pool!r}")
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        layers: list[nn.Module] = []
        c, size = self.in_channels, self.image_size
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size), *([nn.BatchNorm2d(out)] if batch_norm else []), nn.ReLU(),
                       nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)]
            c, size = out, (size - kernel_size + 1) // 2
        if size < 1:
            raise ValueError(f"LeNet: image_size={image_size} is too small for {len(channels)} conv/pool stages")
        self.features = nn.Sequential(*layers)
        flat = c * size * size
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []), nn.ReLU()]
            flat = hidden
        head += [nn.Dropout(dropout), nn.Linear(flat, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)  # [B, C, H, W]
        return self.classifier(self.features(x))

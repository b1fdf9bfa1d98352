"""Slow references for the event-driven kernels (spikegrad.kernels.events): the sums of Linear and
Conv2d in the order those kernels document, so that their results can be compared bit for bit."""

import torch.nn.functional as F


def linear_in_order(x, w, b):
    """The bias, then x[:, k] * w[:, k] for k = 0, 1, ... (a zero input adds nothing)."""
    out = b.expand(len(x), -1)
    for k in range(x.shape[1]):
        out = out + x[:, k:k + 1] * w[:, k]
    return out


def conv_in_order(x, w, b, stride, padding, dilation):
    """The bias, then kernel positions (ky, kx) in row-major order, then input channels."""
    (sh, sw), (ph, pw), (dh, dw) = ((c, c) if isinstance(c, int) else tuple(c) for c in (stride, padding, dilation))
    ref = F.conv2d(x, w, b, (sh, sw), (ph, pw), (dh, dw))
    OH, OW = ref.shape[2:]
    xp = F.pad(x, (pw, pw, ph, ph))
    out = b.view(1, -1, 1, 1).expand_as(ref)
    for ky in range(w.shape[2]):
        for kx in range(w.shape[3]):
            patch = xp[:, :, ky * dh:ky * dh + sh * (OH - 1) + 1:sh, kx * dw:kx * dw + sw * (OW - 1) + 1:sw]
            for c in range(w.shape[1]):
                out = out + patch[:, c:c + 1] * w[:, c, ky, kx].view(1, -1, 1, 1)
    return out

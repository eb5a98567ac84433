"""``sync_batchnorm``: BatchNorm statistics over the global batch, where the backend can compute them.

BAKE's ImageNet configs turn on SyncBN (``TRAIN.SYNC_BN: True``): with 64 images per GPU, each
BatchNorm normalises with the statistics of all 512.  PyTorch's ``SyncBatchNorm`` all-reduces the
statistics through NCCL-style collectives on GPU tensors only; on CPU processes (gloo) its forward
fails, so that case is refused before training starts.
"""
from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

# Devices whose tensors SyncBatchNorm accepts in a multi-process forward (torch/nn/modules/batchnorm.py).
_SYNC_DEVICES = ("cuda", "xpu")


def apply_sync_batchnorm(model: nn.Module, accelerator, enabled: bool) -> nn.Module:
    """``model`` with its BatchNorm layers turned into ``SyncBatchNorm`` when ``enabled`` and useful.

    One process: nothing to synchronise, the model is returned unchanged (with a log line).  Several
    processes on a device without SyncBatchNorm support (CPU / gloo): ``ValueError``.  The conversion
    keeps the parameters and buffers (same names), so checkpoints and the saved student are unchanged.
    """
    if not enabled:
        return model
    if accelerator.num_processes == 1:
        logger.info("sync_batchnorm: one process, so BatchNorm statistics are already those of the whole batch; "
                    "keeping BatchNorm")
        return model
    device = accelerator.device.type
    if device not in _SYNC_DEVICES:
        raise ValueError(
            f"sync_batchnorm needs GPU processes ({' or '.join(_SYNC_DEVICES)}): PyTorch's SyncBatchNorm cannot "
            f"synchronise statistics between {accelerator.num_processes} {device} processes (gloo). "
            "Set sync_batchnorm false, or launch on GPUs"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)

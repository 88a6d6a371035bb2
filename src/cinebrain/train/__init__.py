"""cinebrain.train: the one training engine under every deep model.

Models define their loss (``training_step``) and their validation outputs
(``validation_step``, optionally ``validation_epoch_end``); the :class:`Trainer` does the
rest: AdamW with warmup + cosine, gradient clipping, bf16 / fp16 autocast, gradient
checkpointing, atomic checkpoints with exact resume, early stopping, DDP under
``torchrun``, a progress bar, ``metrics.jsonl`` and TensorBoard event files. It knows
nothing of brains.
"""

from cinebrain.train.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from cinebrain.train.config import TrainConfig
from cinebrain.train.distributed import (
    DistInfo,
    cleanup_distributed,
    get_rank,
    get_world_size,
    is_main_process,
    setup_distributed,
)
from cinebrain.train.log import read_metrics
from cinebrain.train.optim import WarmupCosine, build_optimizer, build_scheduler
from cinebrain.train.seeding import rng_state, seed_everything, set_rng_state
from cinebrain.train.trainer import EarlyStopping, History, Trainer, resolve_device

__all__ = [
    "TrainConfig",
    "Trainer",
    "resolve_device",
    "History",
    "EarlyStopping",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
    "read_metrics",
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "is_main_process",
    "get_rank",
    "get_world_size",
    "seed_everything",
    "rng_state",
    "set_rng_state",
]

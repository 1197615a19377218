"""Runtime: device context, the one training loop, checkpoints and distributed launch."""

"""Training: the loop, optimizers, checkpoints and the N-process (torchrun / TorchRec) variant."""

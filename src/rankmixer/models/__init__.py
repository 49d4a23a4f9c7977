"""Models: one module (or package) per paper, the registry that names them, and the one FLOP counter."""

"""Serving: export a trained run as a self-contained artifact, load it, preprocess raw request rows
and score them over HTTP. Never imports the trainer."""

"""Reusable layers (embeddings, MLPs, interactions, token mixing, per-token FFNs, MoE, attention);
no model-specific glue."""

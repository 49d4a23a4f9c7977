"""Peer libraries' own code run on our data, split, trainer and metrics (see docs/peers.md)."""

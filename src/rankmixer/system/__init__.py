"""System co-design (CubicML): measure how fast settings train, learn it, and search it.

* :mod:`.space` the settings (model size, batch, precision, threads, loader workers, optimizer
  kernel, per-token FFN implementation, allocator, torch.compile) and the default;
* :mod:`.measure` / :mod:`.worker` one setting's training samples/s and peak memory, measured
  by a short run of the trainer in its own process;
* :mod:`.history` the job history (Parquet): every measurement, failed ones with the reason;
* :mod:`.predictor` a bagged gradient-boosted model with uncertainty over the history;
* :mod:`.searcher` ranks untried settings under a memory limit and verifies the top ones;
* :mod:`.auto` the measured ``auto`` choices (per-token FFN implementation, optimizer kernel),
  timed once per hardware fingerprint and shape and cached in the history.
"""

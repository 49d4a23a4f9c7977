"""Text capabilities: GTS, aspect-sentiment triplet extraction from reviews (Wu et al. 2020).

One job per module, read in the order data flows:

* :mod:`~rankmixer.text.aste` reads ASTE-Data-V2 JSON into sentences with their triplets;
  :mod:`~rankmixer.text.tokenize` splits raw review text the same way.
* :mod:`~rankmixer.text.grid` is the grid tagging scheme: spans -> word-pair grid and back.
* :mod:`~rankmixer.text.vocab` maps words to ids; :mod:`~rankmixer.text.batches` pads sentences
  and grids into tensors.
* :mod:`~rankmixer.text.encoders` (CNN, BiLSTM), :mod:`~rankmixer.text.inference` (the k-round
  row/column feedback) and :mod:`~rankmixer.text.model` (the GTS network) are the model.
* :mod:`~rankmixer.text.scoring` is the paper's evaluation (exact-match P/R/F1).
* :mod:`~rankmixer.text.config`, :mod:`~rankmixer.text.artifact` (the model directory),
  :mod:`~rankmixer.text.train` (the training loop), :mod:`~rankmixer.text.predict` and
  :mod:`~rankmixer.text.reviews` (``rankmixer text extract``) orchestrate.
* :mod:`~rankmixer.text.features` aggregates triplets into per-item review features (pure);
  :mod:`~rankmixer.text.review_features` is ``rankmixer features reviews`` (Parquet in and out).

This package may import ``rankmixer.core`` and ``rankmixer.nn`` and nothing above them; it
does not use the ranking trainer (its batches, losses and metrics are CTR-specific).
"""

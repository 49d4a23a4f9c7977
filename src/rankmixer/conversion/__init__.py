"""Personalized Interpolation (Meta, arXiv 2501.14103): conversion probabilities for any window
``T_f`` in ``[T_s, T_l]`` from models trained on the fixed windows ``T_s`` and ``T_l``.

* :mod:`.interpolate`: the exponential delay model and the interpolation
  ``p(T_f) = p_s + alpha (p_l - p_s)``;
* :mod:`.delays`: delay rates per advertiser by censored maximum likelihood (Chapelle 2014),
  shrunk toward the global rate; saved and read as JSON;
* :mod:`.files`: the same on files (a log in, rates out; two prediction files in, each click's window out).

docs/production.md ("Personalized Interpolation of conversion windows") describes the method,
the choices and the benchmark.
"""

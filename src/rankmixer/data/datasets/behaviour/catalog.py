"""The item catalogue: which category an item belongs to and how popular items are.

Item ``i`` belongs to category ``i % n_categories``, so category ``c`` holds the items
``c, c + C, c + 2C, ...`` (``C = n_categories``; ``n_items // C`` of them, the last partial
round unused). Categories are Zipf-popular (exponent ``zipf_exponent``), and so are the items
within a category, by exact inverse-CDF sampling (the synthetic generator's sampler).
"""

from __future__ import annotations

import numpy as np

from rankmixer.data.datasets.behaviour.config import BehaviourConfig
from rankmixer.data.datasets.synthetic.sampling import ZipfSampler


class Catalog:
    def __init__(self, cfg: BehaviourConfig):
        self.n_categories = cfg.n_categories
        self._category = ZipfSampler(cfg.n_categories, cfg.zipf_exponent)
        self._within = ZipfSampler(cfg.n_items // cfg.n_categories, cfg.zipf_exponent)

    def category_of(self, item: np.ndarray) -> np.ndarray:
        return item % self.n_categories

    def categories(self, rng: np.random.Generator, size) -> np.ndarray:
        """Zipf-popular categories."""
        return self._category(rng.random(size))

    def items_in(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """One Zipf-popular item of each given category."""
        return category + self.n_categories * self._within(rng.random(category.shape))

    def items(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Items by global popularity (a popular category, then a popular item in it)."""
        return self.items_in(rng, self.categories(rng, size))

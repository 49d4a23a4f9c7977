"""A review-ranking set: impressions whose click probability is planted on the aspect sentiments
of the items' reviews (sentences of ASTE-Data-V2, whose gold triplets give every item a known
aspect-sentiment profile), with the exact Bayes AUC in the meta; and a reader for Amazon review
JSON lines. ``rankmixer features reviews`` turns either reviews table into item features.

One job per module:

* :mod:`.config`: :class:`ReviewsConfig` and the layout constants;
* :mod:`.corpus`: the ASTE-V2 sentences and their gold aspects and sentiments;
* :mod:`.generator`: the planted model (reviews, item profiles, user tastes, clicks);
* :mod:`.columns`: the columns (names, Arrow types) and the feature schema;
* :mod:`.writer`: Parquet files, ``reviews.parquet``, ``schema.yaml`` and ``reviews_meta.json``;
* :mod:`.preset`: the registered ``reviews`` dataset preset (option ``review_features``);
* :mod:`.amazon`: Amazon reviews JSON lines -> the reviews table.

``docs/gts.md`` ("The review-ranking set") describes the data for users.
"""

from rankmixer.data.datasets.reviews.amazon import AmazonFormatError, read_amazon_reviews, write_amazon_reviews
from rankmixer.data.datasets.reviews.config import META_FILE, REVIEWS_FILE, SCHEMA_FILE, ReviewsConfig
from rankmixer.data.datasets.reviews.writer import generate, load_meta, split_files

__all__ = ["AmazonFormatError", "META_FILE", "REVIEWS_FILE", "ReviewsConfig", "SCHEMA_FILE", "generate", "load_meta",
           "read_amazon_reviews", "split_files", "write_amazon_reviews"]

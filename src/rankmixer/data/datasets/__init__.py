"""Dataset presets; importing this package registers every preset."""

import importlib

# One module per public dataset, plus the generators' presets.
for _mod in ("movielens", "criteo", "avazu", "taobao", "synthetic.preset", "behaviour.preset", "reviews.preset",
             "impressions.preset", "multitask.preset", "conversions.preset"):
    try:
        importlib.import_module(f"rankmixer.data.datasets.{_mod}")
    except ModuleNotFoundError as e:  # a preset still being written must not break the others
        if e.name != f"rankmixer.data.datasets.{_mod}":
            raise

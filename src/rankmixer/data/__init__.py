"""Data: the feature schema, raw-file reading with type checks, dataset presets, preparation into
Parquet shards with a feature map, and the streaming loader of batches."""

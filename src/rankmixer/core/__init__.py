"""The ground floor: pure helpers every layer may use (metrics, files and hashing, weights I/O,
the run-directory reader, YAML, the machine). Nothing here imports another rankmixer module."""

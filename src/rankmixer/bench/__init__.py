"""Benchmarks: each a library function that returns a report (printed as a table, written as JSON)
and a shared harness for timing; the CLI only parses and prints."""

"""The ``rankmixer`` command line: a thin Typer app. Each command parses its options, calls one
library function and prints; the commands live by group in this package (``train``, ``tune``,
``search``, ``tune-system``, ``distill``, ``data``, ``models``, ``bench``, ``serve``, ``text``,
``features``, ``conversion``) and are all registered here, in the order ``--help`` lists them.
"""

from __future__ import annotations

import typer

from rankmixer.cli import bench, conversion, data, features, models, search, serve, text, train, tune
from rankmixer.cli.distill import distill_app
from rankmixer.cli.system import system_app

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, evaluate and serve ranking models.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print a table and write JSON.")
text_app = typer.Typer(no_args_is_help=True, help="Aspect-sentiment triplets from review text (GTS).")
features_app = typer.Typer(no_args_is_help=True, help="Build feature tables to join into a dataset.")
conversion_app = typer.Typer(no_args_is_help=True, help="Personalized Interpolation of conversion windows.")

app.command()(train.quickstart)
app.command()(train.train)
app.command()(train.evaluate)
app.command()(train.predict)
app.command("calibrate-exit")(train.calibrate_exit)
app.command()(tune.tune)
app.command()(search.search)
app.add_typer(system_app, name="tune-system")
app.add_typer(distill_app, name="distill")
app.command()(models.models)
app.command()(serve.export)
app.command()(serve.serve)

app.add_typer(data_app, name="data")
data_app.command("prepare")(data.prepare)
data_app.command("presets")(data.presets)
data_app.command("download")(data.download)
data_app.command("synthetic")(data.synthetic)

app.add_typer(bench_app, name="bench")
bench_app.command("loader")(bench.loader)
bench_app.command("distributed")(bench.distributed)
bench_app.command("accuracy")(bench.accuracy)
bench_app.command("gts")(bench.gts)
bench_app.command("sigeo")(bench.sigeo)
bench_app.command("search-budget")(bench.search_budget)
bench_app.command("pareto")(bench.pareto)
bench_app.command("exfm")(bench.exfm)
bench_app.command("conversions")(bench.conversions)
bench_app.command("cubicml")(bench.cubicml)
bench_app.command("auto-kernels")(bench.auto_kernels)
bench_app.command("scaling")(bench.scaling)
bench_app.command("sequence-length")(bench.sequence_length)
bench_app.command("moe")(bench.moe)
bench_app.command("serve")(bench.serve)
bench_app.command("speed")(bench.speed)
bench_app.command("tables")(bench.tables)

app.add_typer(text_app, name="text")
text_app.command("train-gts")(text.train_gts)
text_app.command("extract")(text.extract)

app.add_typer(features_app, name="features")
features_app.command("reviews")(features.reviews)
features_app.command("amazon-reviews")(features.amazon_reviews)

app.add_typer(conversion_app, name="conversion")
conversion_app.command("fit-delays")(conversion.fit_delays)
conversion_app.command("interpolate")(conversion.interpolate)
conversion_app.command("export")(conversion.export)

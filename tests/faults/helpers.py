"""Builders of the fault-injection suite: tiny synthetic runs (a few hundred rows, a few steps),
a small MovieLens-shaped raw folder, and a live scoring server on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

TINY_DATA = {"rows_train": 400, "rows_valid": 200, "rows_test": 200, "n_users": 50, "n_items": 60,
             "vocab_max": 100, "n_categorical": 3, "n_dense": 2, "n_tags": 10, "seq_len": 4}


def tiny_config(root: Path, run: str = "run", *extra: str):
    """A DCNv2 on the tiny synthetic set: 4 steps of 64 rows, a checkpoint every 2 steps."""
    from rankmixer.config import load_config

    return load_config(None, [
        "data.dataset=synthetic", f"data.preset_options={TINY_DATA}", f"data.prepared_dir={root / 'prep'}",
        f"run_dir={root / run}", "model.name=dcnv2", "model.embedding_dim=4", "model.dnn_hidden=[8]",
        "train.max_steps=4", "train.batch_size=64", "train.checkpoint_every_steps=2", "train.keep_checkpoints=3",
        "train.tensorboard=false", "train.progress=false", "train.early_stopping=null", "train.threads=1", *extra,
    ])


RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},{(u * 7 + m) % 5 + 1}.0,{1_000_000 + 97 * i}\n"
    for i, (u, m) in enumerate((u, m) for u in range(1, 13) for m in (1, 2, 3, 4, 5)))
MOVIES = ("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,\"Heat, The (1995)\",Action\n"
          "3,Casino (1995),Crime\n4,Nixon (1995),Drama\n5,Babe (1995),Children\n")


def movielens_folder(path: Path, movies: str = MOVIES) -> Path:
    """A MovieLens-shaped folder: 60 ratings of 12 users on 5 movies, and movies.csv."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "ratings.csv").write_text(RATINGS)
    (path / "movies.csv").write_text(movies)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``rankmixer serve``'s uvicorn configuration (connection deadlines included) in a thread
    on a free loopback port."""

    def __init__(self, artifact_dir: Path, **settings) -> None:
        import uvicorn

        from rankmixer.serve.server import ServeSettings, create_app, uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        s = ServeSettings(**settings)
        self.server = uvicorn.Server(uvicorn_config(create_app(str(artifact_dir), s), "127.0.0.1", self.port, s))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

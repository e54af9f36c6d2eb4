"""A throw-away managed cluster for tests that restore into the real target."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from perfruns.pipeline.cluster import ManagedCluster, stop_stale_clusters


class Server:
    def __init__(self, cluster: ManagedCluster, folder: Path) -> None:
        self.cluster = cluster
        self.folder = folder
        self.admin = cluster.conninfo("postgres")

    def db(self, name: str) -> str:
        return make_conninfo(self.admin, dbname=name)

    def rows(self, dbname: str, query: str) -> list[tuple]:
        with psycopg.connect(self.db(dbname), connect_timeout=5) as conn:
            return conn.execute(query).fetchall()

    def one(self, dbname: str, query: str) -> object:
        return self.rows(dbname, query)[0][0]


@contextlib.contextmanager
def managed_server() -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="fixproof-test-"))
    folder.chmod(0o755)  # the postgres OS user walks through it to its data folder
    cluster = ManagedCluster(folder / "cluster")
    try:
        cluster.initialize(shared_buffers="64MB", work_mem="8MB", max_connections=30, durable=False)
        cluster.start()
        yield Server(cluster, folder)
    finally:
        try:
            cluster.destroy()
        finally:
            stop_stale_clusters(folder)
            shutil.rmtree(folder)

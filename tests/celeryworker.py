"""A real Celery worker process for end-to-end tests, on a Redis database of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from fixproof.celery import app

# A Redis database of its own, so a developer's running worker never takes these.
BROKER = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parent.parent


def start_worker(data_dir: Path) -> subprocess.Popen[bytes]:
    """A worker on the test database and `data_dir`; it inherits this process's
    environment (the variables that hold DSNs)."""
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fixproof.settings",
        "CELERY_BROKER_URL": BROKER,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "FIXPROOF_DATA_DIR": str(data_dir),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fixproof",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    import redis

    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    redis.Redis.from_url(BROKER).flushdb()


def send(task, *args) -> None:
    with app.connection_for_write(BROKER) as conn:
        task.apply_async(args, connection=conn)


def wait_for(fetch, done, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = fetch()
        if done(row):
            return row
        time.sleep(0.5)
    raise AssertionError(f"still not done after {timeout} s: {fetch()}")

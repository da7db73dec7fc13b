"""A throwaway PostgreSQL cluster for the server-shape tests: Debian's binaries, `initdb` and `pg_ctl`.

The cluster lives in a temporary folder, listens on a free loopback port, trusts local
connections (no password to leak into logs) and is stopped and deleted after the test. PostgreSQL
refuses to run as root, so where the tests run as root its processes run as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.local_stack import free_port

SUPERUSER = "postgres"


def postgres_bin() -> Path | None:
    """The folder of `pg_ctl` and `initdb`: on PATH, or Debian's /usr/lib/postgresql/<major>/bin."""
    if (found := shutil.which("pg_ctl")) is not None:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@dataclass(frozen=True)
class Cluster:
    folder: Path
    port: int
    bin: Path

    def url(self, database: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL of `database` (`psycopg` for MLflow and Optuna, `asyncpg` for Prefect)."""
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True
        ) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(database)) as db:
            return list(db.execute(sql).fetchall())

    def pg_ctl(self, *args: str) -> None:
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), *args])

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", options, "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")


def _as_postgres(command: list[str]) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", SUPERUSER, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )


@contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """initdb, start, yield, stop, delete: a cluster of its own in a fresh temporary folder, on a free port.

    Its own folder under the system's temporary root, not pytest's: pytest's is private to the
    user running the tests, and as root the cluster runs as `postgres`, which must reach it.
    """
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (initdb, pg_ctl)")
    folder = Path(tempfile.mkdtemp(prefix="driftloop-postgres-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SUPERUSER)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    _as_postgres(
        [str(binaries / "initdb"), "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
         "--no-sync"]
    )  # fmt: skip
    cluster = Cluster(folder, free_port(), binaries)
    try:
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

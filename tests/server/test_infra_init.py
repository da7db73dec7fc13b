"""infra/postgres-init.sh run for real against a throwaway PostgreSQL, and the backup infra/OPERATIONS.md describes.

The script is what the postgres image runs on its first start (compose.yaml mounts it into
/docker-entrypoint-initdb.d) and what an operator runs by hand against a server of their own, with
PGHOST, PGPORT, PGUSER and the four passwords in the environment: the second way is the one run here.

tests/postgres.py makes clusters that trust every local connection, where a password is never
checked. This module's cluster (its own: the fixture is per module) is switched to scram-sha-256 for
every role but the superuser before the script runs, so "this role opens that database with this
password" and "not with another" are real checks, beside REVOKE CONNECT (which holds under trust too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from flows.local_stack import free_port
from tests.postgres import SUPERUSER, Cluster, _as_postgres

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "postgres-init.sh"
STORES = ("prefect", "mlflow", "optuna", "driftloop")
PASSWORDS = {f"{store.upper()}_DB_PASSWORD": f"{store}-pw-{n}1x" for n, store in enumerate(STORES)}

# Local socket and the superuser over TCP stay trusted (the fixtures' own connections); every other
# role must give its password. PostgreSQL 15 stores new passwords as SCRAM by default.
HBA = f"""local all all trust
host all {SUPERUSER} 127.0.0.1/32 trust
host replication {SUPERUSER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def run_init(cluster: Cluster, **passwords: str | None) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it: PG* variables and the passwords, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_")) and k not in PASSWORDS}
    env.update(PATH=f"{cluster.bin}{os.pathsep}{env.get('PATH', '')}", PGHOST="127.0.0.1", PGPORT=str(cluster.port))
    env["PGUSER"] = SUPERUSER
    for name, value in {**PASSWORDS, **passwords}.items():
        if value is not None:
            env[name] = value
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)


def connect(cluster: Cluster, user: str, password: str, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=user, password=password, dbname=database, connect_timeout=10
    )


@pytest.fixture(scope="module")
def hba_cluster(cluster: Cluster) -> Cluster:
    (cluster.folder / "data" / "pg_hba.conf").write_text(HBA)
    cluster.pg_ctl("reload")
    rules = cluster.query("postgres", "SELECT user_name, auth_method, error FROM pg_hba_file_rules WHERE type = 'host'")
    assert all(error is None for *_, error in rules), rules
    assert (["all"], "scram-sha-256", None) in [(list(u), m, e) for u, m, e in rules], rules
    return cluster


@pytest.fixture(scope="module")
def initialised(hba_cluster: Cluster) -> Cluster:
    done = run_init(hba_cluster)
    assert done.returncode == 0, done.stderr
    assert "roles and databases prefect, mlflow, optuna, driftloop are ready" in done.stdout
    return hba_cluster


def test_the_script_is_executable_so_the_image_runs_it_rather_than_sourcing_it() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    # psql reads the passwords from its environment: on its command line `ps` would show them to everyone
    assert "\\getenv prefect_pw PREFECT_DB_PASSWORD" in text
    assert not re.search(r"-v \w+_pw=", text)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MLFLOW_DB_PASSWORD", "CHANGE-ME-mlflow"), ("DRIFTLOOP_DB_PASSWORD", None), ("OPTUNA_DB_PASSWORD", "")],
)
def test_a_placeholder_or_missing_password_is_refused_before_anything_is_made(
    hba_cluster: Cluster, variable: str, value: str | None
) -> None:
    done = run_init(hba_cluster, **{variable: value})
    assert done.returncode != 0
    assert variable in done.stderr
    assert hba_cluster.query("postgres", "SELECT rolname FROM pg_roles WHERE rolname = ANY(ARRAY['prefect', 'mlflow', "
                             "'optuna', 'driftloop'])") == []  # fmt: skip


def test_one_login_role_and_one_utf8_database_per_store_each_owned_by_its_role(initialised: Cluster) -> None:
    roles = initialised.query(
        "postgres", "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = ANY(ARRAY"
        "['prefect', 'mlflow', 'optuna', 'driftloop'])"
    )  # fmt: skip
    assert sorted(roles) == sorted((store, True, False, False) for store in STORES)
    owners = initialised.query(
        "postgres",
        "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database "
        "WHERE datname = ANY(ARRAY['prefect', 'mlflow', 'optuna', 'driftloop'])",
    )
    assert sorted(owners) == sorted((store, store, "UTF8") for store in STORES)


def test_pg_trgm_is_in_the_prefect_database_for_its_migration(initialised: Cluster) -> None:
    assert initialised.query("prefect", "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == [("pg_trgm",)]
    assert initialised.query("mlflow", "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == []


def test_each_role_opens_its_own_database_with_its_password_and_no_other(initialised: Cluster) -> None:
    for n, store in enumerate(STORES):
        password = PASSWORDS[f"{store.upper()}_DB_PASSWORD"]
        with connect(initialised, store, password, store) as db:
            assert db.execute("SELECT current_user, current_database()").fetchone() == (store, store)
            # the owner may create in its database's public schema (PostgreSQL 15 took that from PUBLIC):
            # what each store's own migrations do on their first start
            db.execute("CREATE TABLE created_by_its_migrations (id int)")
            db.execute("DROP TABLE created_by_its_migrations")
        other = STORES[(n + 1) % len(STORES)]
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(initialised, store, password, other)  # REVOKE CONNECT ... FROM PUBLIC
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(initialised, store, PASSWORDS[f"{other.upper()}_DB_PASSWORD"], store)


def test_the_documented_base_backup_and_wal_archive_restore_to_the_last_commit(initialised: Cluster) -> None:
    """OPERATIONS.md, "Backups" and "Restore drill", on this cluster: what compose.yaml configures.

    Archiving on (as compose.yaml's command line sets it), a base backup, writes after it in WAL
    segments the archive alone holds, then a fresh data directory from the backup with
    restore_command and recovery.signal: every database comes back as of the last archived commit.
    """
    folder = Path(tempfile.mkdtemp(prefix="driftloop-restore-", dir=initialised.folder))
    archive, backup, restored = folder / "wal-archive", folder / "base", folder / "restored"
    shutil.chown(folder, SUPERUSER, SUPERUSER)
    _as_postgres(["install", "-d", "-m", "700", str(archive)])
    archive_command = f"test ! -f {archive}/%f && cp %p {archive}/%f"
    with psycopg.connect(initialised.dsn("postgres"), autocommit=True) as db:
        db.execute("ALTER SYSTEM SET archive_mode = on")
        db.execute(f"ALTER SYSTEM SET archive_command = '{archive_command}'")
    initialised.stop()
    initialised.start()  # archive_mode needs a restart
    try:
        with connect(initialised, "driftloop", PASSWORDS["DRIFTLOOP_DB_PASSWORD"], "driftloop") as db:
            db.execute("CREATE TABLE history (n int)")
            db.execute("INSERT INTO history VALUES (1)")
        _as_postgres(
            [str(initialised.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(initialised.port), "-U", SUPERUSER,
             "-D", str(backup), "-X", "stream", "--checkpoint=fast"]
        )  # fmt: skip
        _as_postgres([str(initialised.bin / "pg_verifybackup"), str(backup)])
        with connect(initialised, "driftloop", PASSWORDS["DRIFTLOOP_DB_PASSWORD"], "driftloop") as db:
            db.execute("INSERT INTO history VALUES (2)")  # after the backup: only the archive has it
        with psycopg.connect(initialised.dsn("postgres"), autocommit=True) as db:
            # close the segment holding the second row, so the archiver copies it
            (segment,) = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        for _ in range(150):
            if (archive / segment).exists():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{segment} was never archived: see {initialised.folder / 'server.log'}")

        # The drill: the backup as a new data directory, told where the archive is, started elsewhere.
        _as_postgres(["cp", "-a", str(backup), str(restored)])
        restore_command = f"restore_command = 'cp {archive}/%f %p'"
        _as_postgres(["sh", "-c", f'echo "{restore_command}" >> {restored}/postgresql.auto.conf'])
        _as_postgres(["touch", str(restored / "recovery.signal")])
        copy = Cluster(folder, free_port(), initialised.bin)
        _as_postgres(
            [str(copy.bin / "pg_ctl"), "-D", str(restored), "-o",
             f"-p {copy.port} -k {folder} -c listen_addresses=127.0.0.1 -c archive_mode=off -c fsync=off",
             "-l", str(folder / "restored.log"), "-w", "-t", "60", "start"]
        )  # fmt: skip
        try:
            # it answers once consistent, then replays the rest of the archive and promotes itself at its end
            for _ in range(300):
                if copy.query("postgres", "SELECT pg_is_in_recovery()") == [(False,)]:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"still recovering: see {folder / 'restored.log'}")
            assert copy.query("driftloop", "SELECT n FROM history ORDER BY n") == [(1,), (2,)]
            assert sorted(row[0] for row in copy.query("postgres", "SELECT datname FROM pg_database")) == sorted(
                ["postgres", "template0", "template1", *STORES]
            )
        finally:
            _as_postgres([str(copy.bin / "pg_ctl"), "-D", str(restored), "-m", "fast", "-w", "stop"])
    finally:
        with psycopg.connect(initialised.dsn("postgres"), autocommit=True) as db:
            db.execute("ALTER SYSTEM RESET archive_mode")
            db.execute("ALTER SYSTEM RESET archive_command")
        initialised.stop()
        initialised.start()
        shutil.rmtree(folder, ignore_errors=True)


def test_running_it_again_succeeds_and_resets_the_passwords(initialised: Cluster) -> None:
    again = run_init(initialised, OPTUNA_DB_PASSWORD="optuna-rotated-2x")
    assert again.returncode == 0, again.stderr
    assert len(initialised.query("postgres", "SELECT 1 FROM pg_database WHERE datname = 'optuna'")) == 1
    with connect(initialised, "optuna", "optuna-rotated-2x", "optuna") as db:
        assert db.execute("SELECT current_user").fetchone() == ("optuna",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(initialised, "optuna", PASSWORDS["OPTUNA_DB_PASSWORD"], "optuna")
    with connect(initialised, "prefect", PASSWORDS["PREFECT_DB_PASSWORD"], "prefect") as db:
        assert db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() == (1,)

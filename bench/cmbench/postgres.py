"""PostgreSQL through psql: whether it is there, and the run's own databases."""

import shutil


def psql(run, sql, db="postgres", check=True):
    argv = ["psql", f"{run.args.pg}/{db}", "-v", "ON_ERROR_STOP=1", "-Atqc", sql]
    return run.sh(argv, check=check)[1]


def missing(run):
    """Why PostgreSQL cannot be used (None when it can)."""
    if not shutil.which("psql"):
        return "psql not installed"
    p = psql(run, "SELECT 1", check=False)
    return None if p.returncode == 0 else f"PostgreSQL at {run.args.pg} unreachable: {p.stderr.strip()}"


def create(run, tag):
    """A fresh database named after the run; (name, url)."""
    name = f"cmbench_{run.name}_{tag}".lower()
    psql(run, f"CREATE DATABASE {name}")
    run.pg_dbs.append(name)
    return name, f"{run.args.pg}/{name}"


def drop(run, name):
    psql(run, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
    if name in run.pg_dbs:
        run.pg_dbs.remove(name)

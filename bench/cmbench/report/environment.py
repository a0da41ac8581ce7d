"""The machine and the versions the report names at its top."""

import os
import platform
import shutil
import subprocess

from .. import postgres


def versions(run):
    """cm, rustc, Celery, RabbitMQ and PostgreSQL, as this run found them."""
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return "not found"

    import celery
    import kombu

    v = {"cm": out([run.args.cm, "--version"]),
         "rustc": out(["rustc", "--version"]),
         "Celery": f"celery {celery.__version__}, kombu {kombu.__version__}, Python {platform.python_version()}"}
    try:
        with run.app.connection_for_write() as conn:
            conn.connect()
            props = conn.connection.server_properties
            v["RabbitMQ"] = f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')} ({props.get('platform', '')})"
    except Exception as e:
        v["RabbitMQ"] = f"unknown ({e})"
    pg = postgres.psql(run, "SHOW server_version", check=False) if shutil.which("psql") else None
    v["PostgreSQL"] = pg.stdout.strip() if pg and pg.returncode == 0 else "not reachable"
    return v

def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {"nproc": len(os.sched_getaffinity(0)), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "CPU": model, "kernel": f"{platform.system()} {platform.release()}"}

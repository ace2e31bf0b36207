"""A private PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster in a temporary directory.

`initdb` refuses to run as root, so under root (CI) the cluster belongs to the `postgres` user the Debian package
creates, and the server runs as that user; otherwise as whoever runs the tests. The server listens on a free
loopback port with password (SCRAM) authentication, as a deployment's would.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers import free_port

PASSWORD = "dagster-test-password"


def postgres_bin() -> Path | None:
    """Where `initdb` and `pg_ctl` are (Debian keeps them out of PATH, under /usr/lib/postgresql/<major>/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_owner() -> dict[str, Any]:
    """subprocess arguments that run a command as the cluster's owner."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam("postgres")
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A running server with a `dagster` database; yields the DAGSTER_PG_* variables of deploy/dagster/dagster.yaml.

    The cluster lives in a directory of its own under the system's temporary directory (pytest's are private to
    root, and the server may run as `postgres`), removed afterwards."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` (scripts/setup.sh does)")
    directory = Path(tempfile.mkdtemp(prefix="rlhf-postgres-"))
    owner = _as_owner()
    if owner:
        os.chown(directory, owner["user"], owner["group"])
    data, password_file = directory / "data", directory / "password"
    password_file.write_text(PASSWORD)
    if owner:
        os.chown(password_file, owner["user"], owner["group"])
    port = free_port()
    log = directory / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=directory, **owner)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr[-2000:]}")

    run(str(binaries / "initdb"), "-D", str(data), "-U", "dagster", f"--pwfile={password_file}",
        "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync")
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        env = {"PGPASSWORD": PASSWORD}
        created = subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster",
                                  "dagster"], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        if created.returncode != 0:
            raise RuntimeError(f"createdb failed: {created.stderr}")
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "dagster",
               "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": "dagster"}
    finally:
        subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, cwd=directory, **owner)
        shutil.rmtree(directory, ignore_errors=True)

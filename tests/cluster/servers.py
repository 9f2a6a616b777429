"""Real servers and hosts for the multi-host tests: Linux network namespaces joined by veth
pairs, a PostgreSQL server and an MLflow tracking server, started as users start them.

Everything a :class:`Lab` starts or makes it also stops and removes on exit, whatever
happened inside. Needs root (network namespaces, ``runuser``) and Debian's ``postgresql``
package (``make cluster-deps`` installs it); a missing part fails with what is missing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SUBNET = "10.213.0"  # addresses exist only inside the namespaces a Lab makes
SERVER_ADDRESS = f"{SUBNET}.1"
PG_USER = "infoflow"


def sh(*cmd: str, timeout: float = 60) -> str:
    """Run ``cmd``; its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(
        p.split("/")[4]))  # fmt: skip
    if not found:
        raise RuntimeError(
            "no PostgreSQL server: run `make cluster-deps` (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


class Lab:
    """Hosts as network namespaces, each joined by a veth pair to a bridge in a server
    namespace (``10.213.0.1``); hosts are ``10.213.0.11``, ``.12``, ...

    ``start`` runs a process in a namespace (with its own host name, as on a real host) and
    stops it on exit; ``cut`` takes a host's link down."""

    def __init__(self, root: Path, hosts: int) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the cluster test makes network namespaces: run it as root")
        self.root, self.tag = root, secrets.token_hex(2)
        self.server = f"ifl{self.tag}-srv"
        self.hosts = [f"ifl{self.tag}-h{i + 1}" for i in range(hosts)]
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Lab:
        try:
            self._make()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make(self) -> None:
        try:
            sh("ip", "netns", "add", self.server)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot make network namespaces here: {exc}") from None
        sh("ip", "-n", self.server, "link", "set", "lo", "up")
        sh("ip", "-n", self.server, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.server, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "br0")
        sh("ip", "-n", self.server, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts, 1):
            sh("ip", "netns", "add", host)
            sh("ip", "-n", host, "link", "set", "lo", "up")
            sh("ip", "link", "add", f"ifl{self.tag}h{i}", "netns", host, "type", "veth",
               "peer", "name", f"ifl{self.tag}s{i}", "netns", self.server)  # fmt: skip
            sh("ip", "-n", host, "addr", "add", f"{self.address(i - 1)}/24", "dev",
               f"ifl{self.tag}h{i}")  # fmt: skip
            sh("ip", "-n", host, "link", "set", f"ifl{self.tag}h{i}", "up")
            sh("ip", "-n", self.server, "link", "set", f"ifl{self.tag}s{i}", "master", "br0")
            sh("ip", "-n", self.server, "link", "set", f"ifl{self.tag}s{i}", "up")

    def address(self, host: int) -> str:
        return f"{SUBNET}.{11 + host}"

    def cut(self, host: int) -> None:
        """Take host ``host``'s link down at both ends: its packets go nowhere."""
        sh("ip", "-n", self.server, "link", "set", f"ifl{self.tag}s{host + 1}", "down")
        sh("ip", "-n", self.hosts[host], "link", "set", f"ifl{self.tag}h{host + 1}", "down")

    def start(
        self, netns: str, cmd: list[str], log: Path, *, hostname: str | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None,
    ) -> subprocess.Popen:  # fmt: skip
        """``cmd`` in namespace ``netns`` (its own UTS namespace named ``hostname``), in a
        session of its own, output to ``log``; killed on exit."""
        inner = cmd
        if hostname is not None:
            inner = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh",
                     *cmd]  # fmt: skip
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", netns, *inner], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})}, cwd=cwd)  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, netns: str, cmd: list[str], timeout: float = 300) -> str:
        """``cmd`` run to its end in ``netns``: its stdout."""
        return sh("ip", "netns", "exec", netns, *cmd, timeout=timeout)

    def wait_http(self, netns: str, url: str, server: subprocess.Popen, log: Path,
                  timeout: float = 300) -> None:  # fmt: skip
        """Wait (asking from inside ``netns``) until ``url`` answers; RuntimeError with the
        end of ``log`` if ``server`` exits first or the time runs out."""
        probe = (
            "import sys,time,urllib.request\nend=time.time()+5\nwhile True:\n"
            "  try:\n    urllib.request.urlopen(sys.argv[1],timeout=2);break\n"
            "  except OSError:\n    assert time.time()<end\n    time.sleep(0.25)\n"
        )
        end = time.monotonic() + timeout
        while True:
            cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", probe, url]
            if subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0:
                return
            if server.poll() is not None or time.monotonic() > end:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"no answer from {url}; its server's log ends: {tail}")

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            kill_session(proc)
        for netns in [*self.hosts, self.server]:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def free_port() -> int:
    """A TCP port free on this host's loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole session (it and the workers it spawned) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class Postgres:
    """A PostgreSQL server of Debian's package, run as user ``postgres`` on ``host:port``
    (password authentication over TCP, trust over its Unix socket), in ``lab``'s server
    namespace or on this host's loopback. ``durable=False`` turns fsync off (tests only)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int | None = None,
                 durable: bool = True) -> None:  # fmt: skip
        """``port``: default 5432 in a lab's namespace, else a free one on this host."""
        self.root, self.host, self.durable = root, host, durable
        self.port = port if port is not None else 5432 if host == SERVER_ADDRESS else free_port()
        self.password = secrets.token_hex(8)
        self.data, self.socket = root / "pgdata", root / "pgsocket"
        self.proc: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        """Over TCP, with the password (what workers on other hosts give)."""
        return f"postgresql://{PG_USER}:{self.password}@{self.host}:{self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """Over the Unix socket (for this machine's checks, in any namespace)."""
        return f"postgresql://{PG_USER}@/{database}?host={self.socket}&port={self.port}"

    def start(self, lab: Lab | None, databases: tuple[str, ...]) -> None:
        binaries = postgres_bin()
        self.root.chmod(0o755)
        for path in (self.data, self.socket):
            path.mkdir()
            shutil.chown(path, "postgres")
        secret = self.root / "pgpass"
        secret.write_text(self.password)
        shutil.chown(secret, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        sh(*as_postgres, str(binaries / "initdb"), "-D", str(self.data), "-U", PG_USER,
           "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}")  # fmt: skip
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all {PG_USER} {SUBNET}.0/24 scram-sha-256\n")
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off"] if not self.durable else []
        cmd = [*as_postgres, str(binaries / "postgres"), "-D", str(self.data), "-h", self.host,
               "-p", str(self.port), "-k", str(self.socket), "-c", "max_connections=200",
               *options]  # fmt: skip
        log = self.root / "postgres.log"
        if lab is not None:
            self.proc = lab.start(lab.server, cmd, log)
        else:
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
        self._wait(binaries)
        for database in databases:
            sh("psql", "-h", str(self.socket), "-p", str(self.port), "-U", PG_USER, "-d",
               "postgres", "-c", f"CREATE DATABASE {database}")  # fmt: skip

    def _wait(self, binaries: Path, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while subprocess.run([str(binaries / "pg_isready"), "-h", str(self.socket), "-p",
                              str(self.port)], capture_output=True).returncode:  # fmt: skip
            if (self.proc is not None and self.proc.poll() is not None) or time.monotonic() > end:
                log = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start: {log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            kill_session(self.proc)


def mlflow_server(lab: Lab, backend: str, artifacts: Path, port: int = 5000) -> str:
    """An MLflow tracking server in ``lab``'s server namespace on ``backend``, proxying
    artifacts to ``artifacts`` (``mlflow-artifacts:`` URIs); its URL once it answers."""
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(artifacts), "--host", SERVER_ADDRESS,
           "--port", str(port), "--workers", "2"]  # fmt: skip
    log = lab.root / "mlflow-server.log"
    server = lab.start(lab.server, cmd, log)
    url = f"http://{SERVER_ADDRESS}:{port}"
    lab.wait_http(lab.hosts[0], f"{url}/health", server, log)
    return url


def query_json(lab: Lab, netns: str, script: Path, *args: str) -> dict:
    """Run ``script`` (a Python file printing one JSON object) in ``netns``: the object."""
    return json.loads(lab.run(netns, [sys.executable, str(script), *args]).splitlines()[-1])

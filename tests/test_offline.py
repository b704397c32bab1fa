"""Every command runs offline: `effbench run`, `simulate` and `report --html` as real subprocesses
under a network guard (a sitecustomize.py that logs and refuses any connection that is not
loopback), with no punkt_tab installed, so that HELM's metric modules, which call
nltk.download("punkt_tab") on import, would reach for the network unless effbench stubs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GUARD = textwrap.dedent('''
    """Test network guard: a connection to anything but loopback or a Unix socket, and a name
    lookup of anything but localhost, is appended to the file $NET_LOG and refused with OSError,
    before any packet is sent. Lookups too: nltk >= 3.10 resolves a download's host itself and,
    where that fails (an offline machine), gives up before it ever calls connect."""
    import ipaddress
    import os
    import socket

    _connect, _connect_ex, _create_connection = socket.socket.connect, socket.socket.connect_ex, socket.create_connection
    _getaddrinfo = socket.getaddrinfo


    def _is_loopback(host) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        if host == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False  # a host name: resolving it is already the network
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)


    def _log(what: str) -> None:
        with open(os.environ["NET_LOG"], "a") as f:
            f.write(what + "\\n")


    def _refuse_unless_local(family, address) -> None:
        if family == getattr(socket, "AF_UNIX", None) or isinstance(address, (str, bytes)):
            return  # a Unix socket path
        if _is_loopback(address[0]):
            return
        _log(repr(address))
        raise OSError(f"network guard: connection to {address!r} refused (not loopback)")


    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "", "localhost"):
            try:
                ipaddress.ip_address(name.split("%")[0])  # a numeric address needs no lookup
            except ValueError:
                _log(f"lookup {name!r}")
                raise socket.gaierror(f"network guard: lookup of {name!r} refused (not localhost)") from None
        return _getaddrinfo(host, *args, **kwargs)


    def connect(self, address):
        _refuse_unless_local(self.family, address)
        return _connect(self, address)


    def connect_ex(self, address):
        _refuse_unless_local(self.family, address)
        return _connect_ex(self, address)


    def create_connection(address, *args, **kwargs):
        _refuse_unless_local(None, address)
        return _create_connection(address, *args, **kwargs)


    socket.socket.connect, socket.socket.connect_ex, socket.create_connection = connect, connect_ex, create_connection
    socket.getaddrinfo = getaddrinfo
''')

EFFBENCH = [sys.executable, "-m", "effbench.cli"]


@pytest.fixture
def guarded_env(tmp_path) -> tuple[dict, Path]:
    """Environment for a subprocess: the guard on PYTHONPATH, a fresh HOME and NLTK_DATA (no
    punkt_tab anywhere it looks), the hubs offline; and the guard's log file (absent until a
    connection is refused)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD)
    for folder in ("home", "nltk_data"):
        (tmp_path / folder).mkdir()
    log = tmp_path / "net.log"
    env = dict(os.environ, PYTHONPATH=str(site), HOME=str(tmp_path / "home"), NLTK_DATA=str(tmp_path / "nltk_data"),
               NET_LOG=str(log), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env, log


def python(env: dict, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_guard_refuses_non_loopback_and_lets_loopback_through(guarded_env):
    env, log = guarded_env
    for code in ("import socket; s = socket.socket(); s.connect(('10.255.255.1', 9))",
                 "import socket; s = socket.socket(); s.connect_ex(('10.255.255.1', 9))",
                 "import socket; socket.create_connection(('10.255.255.1', 9), timeout=1)",
                 "import urllib.request; urllib.request.urlopen('http://10.255.255.1:9/', timeout=1)",
                 "import socket; socket.getaddrinfo('example.com', 80)"):
        proc = python(env, code)
        assert proc.returncode != 0 and "network guard" in proc.stderr, (code, proc.stderr[-500:])
    assert log.read_text().splitlines() == ["('10.255.255.1', 9)"] * 4 + ["lookup 'example.com'"]
    log.unlink()
    # What the commands must not do: nltk reports a failed download and carries on, but the guard saw it.
    proc = python(env, "import nltk; nltk.download('punkt_tab')")
    assert log.is_file() and "raw.githubusercontent.com" in log.read_text(), proc.stderr[-500:]
    log.unlink()
    with socket.socket() as server:  # a loopback listener in this process: the guarded child may connect
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        proc = python(env, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=30).close()")
        assert proc.returncode == 0, proc.stderr[-500:]
    proc = python(env, "import nltk; nltk.data.find('tokenizers/punkt_tab/english/')")
    assert proc.returncode != 0 and "LookupError" in proc.stderr  # the child has no punkt_tab
    assert not log.exists()


@pytest.mark.slow
def test_run_simulate_and_report_never_reach_the_network(demo_submission, cache_dir, guarded_env, tmp_path):
    env, log = guarded_env
    out = tmp_path / "out"
    commands = [
        ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir), "--max-eval-instances", "2"],
        ["simulate", str(out), "--budget", "1m"],
        ["report", str(out), "--html"],
    ]
    for args in commands:
        proc = subprocess.run(EFFBENCH + args, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (args[0], proc.stdout[-2000:], proc.stderr[-2000:])
        assert not log.exists(), (args[0], log.read_text())
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    assert 'id="error-score-budget"' not in (out / "report.html").read_text()  # the replay ran, offline

"""Every bad input the hardening runs found (issue 14) and the earlier ones, through the real
command: exit 2, exactly one output line naming the input, no traceback, and no file
created in the working directory, the home directory or a store.

Each case: the command line, extra environment, files the case plants first, and text the
one line must contain. ``{tmp}`` in an argument is the case's working directory.
"""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

SPEC_HEAD = 'plugin = "mlp"\nn_trials = 2\n[settings]\ndataset = "digits"\nepochs = 1\n'
SEARCH = '[search]\nlr = { type = "float", low = 1e-3, high = 1e-2 }\n'


def spec(body: str, search: str = SEARCH) -> dict[str, bytes]:
    return {"s.toml": (SPEC_HEAD + search + body).encode()}


class _Payload:
    def __reduce__(self):
        return os.system, ("touch ran",)


def _one_class_npz(tmp: Path) -> None:
    np.savez(tmp / "one.npz", x=np.zeros((10, 3)), y=np.full(10, 7))


def _huge_header_npz(tmp: Path) -> None:
    from test_hardening_data import patch_npy_shape

    np.savez(tmp / "bad.npz", x=np.zeros((10, 3)), y=np.arange(10) % 2)
    patch_npy_shape(tmp / "bad.npz", "x", "(10, 3)", "(1000000000000, 3)")


def _planted_cifar(tmp: Path) -> None:
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("batches.meta", "test_batch"):
        (folder / name).write_bytes(pickle.dumps({"data": _Payload()}, protocol=2))


CASES = {
    # earlier cases
    "unknown plugin": (["run", "nosuch"], {}, {}, "nosuch"),
    "unknown setting": (["run", "mlp", "--set", "nosuch=1"], {}, {}, "nosuch"),
    "epochs not a number": (["run", "mlp", "--epochs", "abc"], {}, {}, "'abc'"),
    "epochs zero": (["run", "mlp", "--epochs", "0"], {}, {}, "epochs"),
    "unknown dataset": (["run", "mlp", "--dataset", "nosuch"], {}, {}, "nosuch"),
    "missing npz": (["run", "mlp", "--dataset", "npz:gone.npz"], {}, {}, "gone.npz"),
    "unknown estimator": (["run", "mlp", "--mi", "nosuch"], {}, {}, "nosuch"),
    "unknown estimator option": (["run", "mlp", "--set", "renyi.nosuch=1"], {}, {}, "nosuch"),
    "experiment Default": (["run", "mlp", "--experiment", "Default"], {}, {}, "Default"),
    "file store URI": (["run", "mlp", "--tracking-uri", "file:///x"], {}, {}, "file:///x"),
    "missing spec": (["study", "nosuch.toml"], {}, {}, "nosuch.toml"),
    "unknown sampler": (["study", "s.toml"], {}, spec('[sampler]\ntype = "nosuch"\n'), "nosuch"),
    "bad storage": (["study", "s.toml", "--storage", "bogus://x"], {}, spec(""), "bogus://x"),
    # issue 15: replicates, their objective statistic, figures
    "replicates zero": (["run", "mlp", "--replicates", "0"], {}, {}, "replicates"),
    "replicates past the seeds": (
        ["run", "mlp", "--seed", "4294967295", "--replicates", "2"],
        {},
        {},
        "replicates",
    ),
    "lower bound of one replicate": (
        ["study", "s.toml"],
        {},
        spec('[objective]\nmetric = "acc/test"\nstatistic = "lower"\n'),
        "replicates",
    ),
    "unknown statistic": (
        ["study", "s.toml"],
        {},
        spec('[objective]\nmetric = "acc/test"\nstatistic = "median"\n'),
        "median",
    ),
    "unknown figures": (
        ["study", "s.toml"],
        {},
        {"s.toml": ('figures = "some"\n' + SPEC_HEAD + SEARCH).encode()},
        "figures",
    ),
    # 4: spec files that are not UTF-8 TOML
    "binary spec": (["study", "s.toml"], {}, {"s.toml": bytes(range(256))}, "s.toml"),
    "latin-1 spec": (
        ["study", "s.toml"],
        {},
        {"s.toml": 'name = "caf\xe9"\n'.encode("latin-1")},
        "not UTF-8",
    ),
    "deeply nested spec": (
        ["study", "s.toml"],
        {},
        {"s.toml": b"x = " + b"[" * 20000},
        "nested too deeply",
    ),
    "binary spec in report": (["report", "s.toml"], {}, {"s.toml": b"\xff\xfe\x00"}, "s.toml"),
    # 5: option values
    "tpe n_startup_trials text": (
        ["study", "s.toml"],
        {},
        spec('[sampler]\ntype = "tpe"\nn_startup_trials = "four"\n'),
        "n_startup_trials = 'four'",
    ),
    "tpe gamma text": (
        ["study", "s.toml"],
        {},
        spec('[sampler]\ntype = "tpe"\ngamma = "x"\n'),
        "gamma",
    ),
    "gp n_startup_trials text": (
        ["study", "s.toml"],
        {},
        spec('[sampler]\ntype = "gp"\nn_startup_trials = "x"\n'),
        "n_startup_trials = 'x'",
    ),
    "cmaes negative sigma0": (
        ["study", "s.toml"],
        {},
        spec('[sampler]\ntype = "cmaes"\nsigma0 = -1.0\n'),
        "sigma0 = -1.0",
    ),
    "hyperband min_resource text": (
        ["study", "s.toml"],
        {},
        spec('[pruner]\ntype = "hyperband"\nmin_resource = "x"\n'),
        "min_resource = 'x'",
    ),
    "median pruner option of the wrong type": (
        ["study", "s.toml"],
        {},
        spec('[pruner]\ntype = "median"\nn_warmup_steps = "2"\n'),
        "n_warmup_steps = '2'",
    ),
    "step nan": (
        ["study", "s.toml"],
        {},
        spec("", '[search]\nlr = { type = "float", low = 0.001, high = 0.01, step = nan }\n'),
        "step nan",
    ),
    "step inf": (
        ["study", "s.toml"],
        {},
        spec("", '[search]\nlr = { type = "float", low = 0.001, high = 0.01, step = inf }\n'),
        "step inf",
    ),
    # 6: long names
    "plugin name of 300 characters": (["plugins", "new", "a" * 300], {}, {}, "aaaa"),
    "invalid plugin name": (["plugins", "new", "Bad_Name"], {}, {}, "Bad_Name"),
    # 7, 8: paths and servers refused before any store is written
    "storage under a file": (
        ["study", "s.toml", "--storage", "sqlite:///{tmp}/afile/x.db"],
        {},
        {**spec(""), "afile": b""},
        "afile",
    ),
    "tracking store under a file": (
        ["run", "mlp", "--tracking-uri", "sqlite:///{tmp}/afile/x.db"],
        {},
        {"afile": b""},
        "afile",
    ),
    "postgresql storage without a server": (
        ["study", "s.toml", "--storage", "postgresql://u:s3cretpw@127.0.0.1:1/db"],
        {},
        spec(""),
        "postgresql://u:***@127.0.0.1:1/db",
    ),
    "mysql storage without a server": (
        ["study", "s.toml", "--storage", "mysql://u:s3cretpw@127.0.0.1:1/db"],
        {},
        spec(""),
        "mysql://u:***@127.0.0.1:1/db",
    ),
    "password in a storage query": (
        ["study", "s.toml", "--storage", "postgresql://u@127.0.0.1:1/db?password=s3cretpw"],
        {},
        spec(""),
        "password=***",
    ),
    "postgresql tracking store": (
        ["run", "mlp", "--tracking-uri", "postgresql://u:s3cretpw@127.0.0.1:1/db"],
        {},
        {},
        "postgresql://u:***@127.0.0.1:1/db",
    ),
    "unreachable server with credentials": (
        ["run", "mlp", "--tracking-uri", "http://u:s3cretpw@127.0.0.1:1"],
        {},
        {},
        "http://127.0.0.1:1",
    ),
    "report of an absent sqlite storage": (
        ["report", "nosuch", "--storage", "sqlite:///{tmp}/r.db"],
        {},
        {},
        "r.db",
    ),
    "report without a store": (["report", "nosuch"], {}, {}, "infoflow study"),
    "report with a storage but no tracking store": (
        ["report", "s", "--storage", "journal:{tmp}/j.journal"],
        {},
        {"j.journal": b""},
        "s",
    ),
    "ui port out of range": (["ui", "--port", "70000"], {}, {}, "--port"),
    # 12: silently accepted before
    "download maybe": (["run", "mlp"], {"INFOFLOW_DOWNLOAD": "maybe"}, {}, "INFOFLOW_DOWNLOAD"),
    "datasets with download maybe": (
        ["datasets"],
        {"INFOFLOW_DOWNLOAD": "maybe"},
        {},
        "INFOFLOW_DOWNLOAD",
    ),
    "data dir is a file": (
        ["datasets", "--data-dir", "{tmp}/afile"],
        {},
        {"afile": b"x"},
        "afile",
    ),
    "data dir variable is a file": (
        ["run", "mlp"],
        {"INFOFLOW_DATA_DIR": "{tmp}/afile"},
        {"afile": b"x"},
        "afile",
    ),
    "npz of one class": (
        ["run", "mlp", "--dataset", "npz:{tmp}/one.npz"],
        {},
        _one_class_npz,
        "single class",
    ),
    # 13: messages that name the input
    "duplicate toml key": (
        ["study", "s.toml"],
        {},
        {"s.toml": b'plugin = "mlp"\nn_trials = 2\nn_trials = 3\n'},
        "'n_trials = 3'",
    ),
    "npz header of 7 TiB": (
        ["run", "mlp", "--dataset", "npz:{tmp}/bad.npz"],
        {},
        _huge_header_npz,
        "'x'",
    ),
    "workers zero": (["study", "s.toml", "--workers", "0"], {}, spec(""), "--workers"),
    "missing argument": (["run"], {}, {}, "plugin"),
    # 9: a planted pickle is refused, never run
    "planted cifar pickle": (
        ["run", "mlp", "--dataset", "cifar10:split=test", "--data-dir", "{tmp}/data"],
        {},
        _planted_cifar,
        "test_batch",
    ),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working and home directory; the environment restored afterwards."""
    saved = dict(os.environ)
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("INFOFLOW_DATA_DIR", raising=False)
    yield work
    os.environ.clear()
    os.environ.update(saved)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, workdir: Path) -> None:
    from infoflow_track.cli import app

    argv, env, files, named = CASES[case]
    if callable(files):
        files(workdir)
    else:
        for name, data in files.items():
            (workdir / name).write_bytes(data)
    before = _tree(workdir.parent)
    args = [a.replace("{tmp}", str(workdir)) for a in argv]
    result = CliRunner().invoke(app, args, env={k: v.replace("{tmp}", str(workdir))
                                                for k, v in env.items()})  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-2000:]
    assert named in lines[0], lines[0]
    assert "s3cretpw" not in result.output
    assert _tree(workdir.parent) == before  # no store, lock, journal or folder made
    assert not (workdir / "ran").exists()


def test_ui_on_a_busy_port_creates_no_store(workdir: Path) -> None:
    from infoflow_track.cli import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"--port {port}" in result.output
    assert not (workdir / "mlruns").exists()

"""The CLI as a user meets it: every verb documented, and the edge install needs no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from edge_runtime.cli import ORDER, main

VERBS = [ep.name for ep in entry_points(group="twinspect.verbs")]

# Run the CLI in a fresh interpreter where the training stack cannot be imported, as on a line
# PC with only the base dependencies installed.
EDGE_ONLY = (
    "import sys\n"
    "for m in ('tensorflow', 'keras', 'tf2onnx'):\n"
    "    sys.modules[m] = None\n"
    "from edge_runtime.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _edge_only(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", EDGE_ONLY, *args], capture_output=True, text=True, timeout=60
    )


def test_every_verb_is_registered_and_loads():
    assert sorted(VERBS) == sorted(ORDER)
    for ep in entry_points(group="twinspect.verbs"):
        verb = ep.load()
        assert verb.name == ep.name and verb.help, ep.name


@pytest.mark.parametrize("verb", sorted(ORDER))
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: twinspect {verb}" in out and "example" in out


def test_top_level_help_lists_every_verb():
    proc = _edge_only("--help")
    assert proc.returncode == 0, proc.stderr
    for verb in ORDER:
        assert verb in proc.stdout


@pytest.mark.parametrize("verb", sorted(ORDER))
def test_help_works_without_tensorflow(verb):
    proc = _edge_only(verb, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: twinspect {verb}" in proc.stdout


@pytest.mark.parametrize("verb", ["train", "export"])
def test_training_verbs_without_tensorflow_name_the_extra(verb, tmp_path):
    args = ["--data", str(tmp_path)] if verb == "train" else ["--run", str(tmp_path)]
    proc = _edge_only(verb, *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'twinspect[train]'" in lines[0], proc.stderr


def test_no_verb_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "VERB" in capsys.readouterr().out

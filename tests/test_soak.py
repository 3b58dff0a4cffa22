"""`python -m edge_runtime.soak` (make soak): what can be checked without soaking — its refusals
and the BENCHMARKS.md section it writes. The soak itself is a benchmark, run by `make soak`; the
faults it repeats are each proved once by tests/test_line_integration.py."""

from __future__ import annotations

from collections import Counter

import pytest

from edge_runtime.soak import BEGIN, END, Figures, main, write_section


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--cameras", "0"], "--cameras must be 1–32, got 0"),
        (["--minutes", "-1"], "--minutes must be > 0"),
        (["--outage", "40"], "--outage must be shorter than --fault-every"),
        (["--model", "/nonexistent/model"], "--model /nonexistent/model: no model.json there"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def figures(lost_plc: int = 0) -> Figures:
    fig = Figures(3, 5.0, 10.0, 250.0, "models/default", parts={"cam1": 10, "cam2": 12})
    fig.lost_mqtt, fig.lost_plc = {"cam1": 0}, {"cam1": lost_plc}
    fig.faults, fig.exit_code, fig.opcua_match = Counter(broker=2, plc=1, camera=1), 0, True
    return fig


def test_a_lost_record_fails_the_soak_and_every_figure_is_said():
    assert figures().ok and "soak: PASS" in figures().text()
    bad = figures(lost_plc=1)
    assert not bad.ok and "soak: FAIL" in bad.text()
    assert "| records lost (JSONL vs subscriber vs PLC log) | 1 (MQTT 0, PLC 1) |" in bad.markdown(
        "make soak"
    )
    assert "| parts judged | 22 (per camera 10, 12) |" in bad.markdown("make soak")


def test_markdown_replaces_its_own_section_and_nothing_else(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# benchmarks\n\nbefore\n")
    write_section(md, figures().markdown("make soak"))  # appended when absent
    first = md.read_text()
    assert first.startswith("# benchmarks\n\nbefore\n\n" + BEGIN) and first.endswith(END + "\n")
    md.write_text(first + "\nafter\n")
    write_section(md, figures(lost_plc=3).markdown("make soak"))  # replaced in place
    text = md.read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    assert text.startswith("# benchmarks\n\nbefore\n\n") and text.endswith(END + "\n\nafter\n")
    assert "PLC 3" in text and "PLC 0)" not in text

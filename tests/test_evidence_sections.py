"""`make bench` rewrites BENCHMARKS.md but keeps the sections other benchmarks own."""

from __future__ import annotations

from train.evidence import write_keeping_sections
from train.evidence_surface import BEGIN, END, write_section


def test_bench_keeps_soak_and_surface_sections_and_surface_replaces_only_its_own(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# old\n\n<!-- soak:begin -->\nsoak figures\n<!-- soak:end -->\n")
    write_section(md, f"{BEGIN}\nsurface v1\n{END}")
    write_keeping_sections(md, "# twinspect — benchmarks\n\nnew default-line figures\n")
    text = md.read_text()
    assert text.startswith("# twinspect — benchmarks") and "# old" not in text
    assert "soak figures" in text and "surface v1" in text
    write_section(md, f"{BEGIN}\nsurface v2\n{END}")
    text = md.read_text()
    assert "surface v2" in text and "surface v1" not in text and "soak figures" in text

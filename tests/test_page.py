"""report/index.html: the sections a run has, in order, escaped, self-contained; and rendered in Chromium."""

import json
import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from evaluators.page import PAGE, page_for, write_page

TABLE2_MD = """**Average@2 (%)**, 95% bootstrap interval over problems in brackets; * differs from dft

| method | toy-id | average |
| --- | ---: | ---: |
| base | 25.00 [10.0, 40.0] * | 25.00 |
| dft | 45.00 [30.0, 60.0] | 45.00 |

**Each method minus dft** (points of Average@k)

| method | benchmark | difference | 95% interval | p | p (Holm) | significant |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
| base | toy-id | -20.00 | [-35.0, -5.0] | 0.0100 | 0.0100 | yes |

**Ours vs the paper's Table 2** (ours / paper (difference), percent)

| method | math500 | average |
| --- | ---: | ---: |
| dft | 45.00 / 64.71 (-19.71) | 45.00 / 35.43 (+9.57) |

**Tuning** (every trial on the validation split)

| method | trial | values | validation |
| --- | --- | --- | ---: |
| dft | 0 | {"learning_rate": 0.001} | 41.50 +- 2.10 |

- dft: the chosen {"learning_rate": 0.001} is still at the low edge of what was searched.

**Budget ledger** (mean over seeds)

| method | samples generated |
| --- | ---: |
| dft | 64 |
"""
HOSTILE = '<img src="http://example.com/x.png" onerror="alert(1)"><script>fetch("http://example.com")</script>'


def png(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1, 2], [0.2, 0.4, 0.45], marker="o")
    ax.set_title(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def manifest(folder: Path, stage: str, **counts) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({
        "stage": stage, "seed": 0, "wall_time_s": 1.5, "finished_at": "2026-12-04T10:00:00+0000",
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "config": {"k": 2}, "counts": counts}))


@pytest.fixture
def full_run(tmp_path):
    """A run directory with every input a page section can show, and one hostile training example."""
    run = tmp_path / "run"
    report = run / "report"
    report.mkdir(parents=True)
    (report / "table2.md").write_text(TABLE2_MD)
    png(report / "table2.png", "table")
    pl.DataFrame({"method": ["dft"], "samples_generated": [64], "flops": [1.5e12]}).write_csv(report / "costs.csv")
    pl.DataFrame({"method": ["dft"], "trials": [3], "chosen": ['{"learning_rate": 0.001}'],
                  "validation_avg_at_k": [41.5], "validation_se": [2.1], "at_edge": [False]}).write_csv(
        report / "tuning.csv")
    pl.DataFrame({"method": ["dft"], "samples": [64], "flops": [2.0e12]}).write_csv(report / "budget.csv")
    for name in ("budget", "curves", "token_probs", "extra_figure"):
        png(report / f"{name}.png", name)
    pl.DataFrame({"method": ["dft"], "step": [2], "average": [40.0]}).write_csv(report / "curves.csv")
    (report / "token_probs.md").write_text("**Target-token probabilities**\n\n| model | mean p |\n| --- | ---: |\n"
                                           "| base | 0.412 |\n")
    build = run / "build"
    manifest(build, "build", positives=1)
    (build / "stats.json").write_text(json.dumps({
        "samples": 64, "prompts": 16, "samples_per_prompt": 4, "pass@1": 0.28125, "pass@4": 0.5625,
        "truncated": 2, "positives": 9, "pairs": 8, "status": {"ok": 60, "no_answer": 4}}))
    pl.DataFrame({"prompt_id": ["p0"], "problem": [HOSTILE], "response": ["1+1=2. \\boxed{2}"]}).write_parquet(
        build / "positives.parquet")
    pl.DataFrame({"prompt_id": ["p0"], "problem": ["1+1"], "chosen": ["\\boxed{2}"],
                  "rejected": ["</pre><b>3</b>"]}).write_parquet(build / "pairs.parquet")
    manifest(run / "generate", "generate", base_model="toy", base_model_fingerprint="413d36d4")
    manifest(run / "train" / "dft", "train/dft", base_model_fingerprint="413d36d4", data_fingerprint="xxh3:ab")
    return run


SECTIONS = ["headline", "tuning", "budget", "curves", "token-probs", "other", "data", "provenance"]


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def test_every_section_in_order_escaped_and_self_contained(full_run):
    path = write_page(full_run, recipe={"run": {"name": "demo"}, "model": "toy:arith"})
    html = path.read_text()
    assert path == full_run / "report" / PAGE
    assert section_ids(html) == SECTIONS
    assert html.count("<img ") == 5  # table2, budget, curves, token_probs, extra_figure (the hostile one escaped)
    assert "<script" not in html and "onerror=" not in html.replace("onerror=&quot;", "")
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing to fetch: only data: URIs and anchors
    assert "http://example.com" in html and "&lt;script&gt;" in html  # the hostile text, shown escaped
    assert "&lt;/pre&gt;&lt;b&gt;3&lt;/b&gt;" in html
    assert "validation_se" in html and "at_edge" in html  # tuning.csv: every column, as it comes
    assert "flops" in html
    sections = {k: html.split(f'<section id="{k}">')[1].split("</section>")[0] for k in SECTIONS}
    assert "still at the low edge" in sections["tuning"] and "41.50 +- 2.10" in sections["tuning"]
    assert "Budget ledger" in sections["budget"] and "samples generated" in sections["budget"]
    assert "28.12%" in html and "status: no_answer" in html  # pass@1 and verifier statuses
    assert "Each method minus dft" in html and '<span class="sig"' in html
    assert not any(w in sections["headline"] for w in ("samples generated", "low edge"))  # in their sections
    assert "Ours vs the paper" in sections["headline"] and "45.00 / 64.71 (-19.71)" in sections["headline"]
    assert "toy:arith" in html and "413d36d4" in html and "2.13.0+cpu" in html


def test_sections_without_inputs_are_left_out(tmp_path):
    run = tmp_path / "bare"
    (run / "report").mkdir(parents=True)
    (run / "report" / "table2.md").write_text(TABLE2_MD.split("**Tuning")[0])  # no tuning, no ledger
    html = write_page(run).read_text()
    assert section_ids(html) == ["headline", "provenance"]
    assert "<img " not in html


def test_page_for_writes_a_missing_page_and_refuses_a_run_without_report(full_run, tmp_path):
    page = page_for(full_run)
    assert page.is_file()
    stamp = page.stat().st_mtime_ns
    assert page_for(full_run).stat().st_mtime_ns == stamp  # an existing page is left as the report wrote it
    with pytest.raises(FileNotFoundError, match="no report/table2.md"):
        page_for(tmp_path / "nothing")


def chromium() -> str | None:
    for name in (os.environ.get("WORKBENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render(page: Path, screenshot: Path, tmp_path: Path) -> dict:
    """Open `page` in headless Chromium with scripts off; what a reader would see and what the page did."""
    from playwright.sync_api import sync_playwright

    seen = {"console_errors": [], "requests": []}
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium(), headless=True, args=FLAGS,
            java_script_enabled=False, viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.on("console", lambda m: m.type == "error" and seen["console_errors"].append(m.text))
        tab.on("pageerror", lambda e: seen["console_errors"].append(str(e)))
        tab.on("request", lambda r: seen["requests"].append(r.url))
        tab.goto(page.resolve().as_uri(), wait_until="load")
        seen["text"] = tab.inner_text("body")
        seen["visible"] = {s: tab.locator(f"section#{s} h2").is_visible()
                           for s in re.findall(r'<section id="([^"]+)">', page.read_text())}
        seen["images"] = [(img.is_visible(), (img.bounding_box() or {}).get("width", 0))
                          for img in tab.locator("img").all()]
        tab.screenshot(path=str(screenshot), full_page=True)
        context.close()
    return seen


def expected_sections(run: Path) -> set[str]:
    report = run / "report"
    want = {"headline", "provenance"}
    for section, inputs in [("budget", ["costs.csv", "budget.csv", "budget.png"]), ("tuning", ["tuning.csv"]),
                            ("curves", ["curves.png"]), ("token-probs", ["token_probs.png"])]:
        if any((report / f).is_file() for f in inputs):
            want.add(section)
    if (run / "build" / "stats.json").is_file():
        want.add("data")
    return want


@pytest.mark.slow
def test_smoke_runs_page_renders_in_chromium(smoke_run, full_run, tmp_path):
    """The page the smoke run's report stage wrote, then one with every section, each as a reader sees it."""
    if chromium() is None:
        pytest.skip("chromium is not installed (setup.sh and .ci/run install it as root: apt-get install chromium)")
    out_dir, first = smoke_run
    page = out_dir / "report" / PAGE
    assert page.is_file(), "the report stage wrote no index.html"
    assert f"report page: {page.resolve()}" in first.stdout.strip().splitlines()[-1]
    for run, shot in [(out_dir, Path("/tmp/workbench-report-page.png")), (full_run, tmp_path / "full.png")]:
        page = page_for(run)
        seen = render(page, shot, tmp_path)
        assert seen["console_errors"] == []
        assert seen["requests"] == [page.resolve().as_uri()], "the page asked for something beyond itself"
        assert len(seen["text"]) > 500 and "Provenance" in seen["text"]
        assert expected_sections(run) <= set(seen["visible"]) and all(seen["visible"].values()), seen["visible"]
        pngs = list((run / "report").glob("*.png"))
        assert len(seen["images"]) == len(pngs) and all(v and w > 200 for v, w in seen["images"]), seen["images"]
        from PIL import Image

        assert len(Image.open(shot).convert("RGB").getcolors(1 << 20) or []) > 50  # not blank


def test_cli_report_names_the_page_of_a_run_directory(full_run, tmp_path):
    import subprocess
    import sys

    workbench = str(Path(sys.executable).parent / "workbench")
    out = subprocess.run([workbench, "report", str(full_run)], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == f"report page: {(full_run / 'report' / PAGE).resolve()}"
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([workbench, "report", str(empty), "--open"], check=False, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no report/table2.md" in bad.stdout + bad.stderr

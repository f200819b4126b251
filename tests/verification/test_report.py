"""The verification report: what it says (verdict in words, intervals, flips, decays, cost) and
how it renders in a real headless browser (Debian's chromium driven by playwright).

The browser tests FAIL when chromium is missing (``make test`` installs it); set
``DALIF_SKIP_BROWSER=1`` to skip them on purpose. ``DALIF_REPORT_SCREENSHOTS=DIR`` keeps the
screenshots there (default: pytest's tmp dir).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

import dalif_deploy as dd
from dalif_deploy.verification.pipeline import VerifyOptions, export_round_trip, format_summary
from dalif_deploy.verification.verdict import decay_table, prediction_flips, verdict, wilson

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
CHROMIUM = os.environ.get("DALIF_CHROMIUM", "/usr/bin/chromium")


def _verify(weight_bits: int = 8):
    """digits-cnn verified without Lava, quantised to ``weight_bits``."""
    return dd.verify_checkpoint(CKPT, options=VerifyOptions(lava_samples=0, progress=False,
                                                            weight_bits=weight_bits))


@pytest.fixture(scope="module")
def passing():
    return _verify()


@pytest.fixture(scope="module")
def failing():
    return _verify(weight_bits=2)


def test_wilson_interval_matches_the_closed_form():
    lo, hi = wilson(16, 16)  # all 16 Lava samples right is not "100 %"
    assert round(100 * lo, 1) == 80.6 and hi == 1.0
    lo, hi = wilson(0, 16)
    assert lo == 0.0 and round(100 * hi, 1) == 19.4
    lo, hi = wilson(442, 450)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (96.5, 99.1)
    assert wilson(0, 0) == (0.0, 1.0)


def test_prediction_flips_count_the_confusion_and_list_the_flipped_samples():
    ref = np.array([0, 1, 2, 2, 1, 0])
    fix = np.array([0, 2, 2, 1, 1, 1])
    y = np.array([0, 1, 1, 2, 0, 2])
    f = prediction_flips(ref, fix, y, classes=3, limit=2)
    assert f["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 1, 1]]
    # sample 1: right -> wrong; 3: right -> wrong; 5: wrong -> wrong
    assert (f["flipped"], f["lost"], f["gained"]) == (3, 2, 0)
    assert f["samples"] == [{"index": 1, "reference": 1, "fixed": 2, "label": 1},
                            {"index": 3, "reference": 2, "fixed": 1, "label": 2}]


def test_a_failed_check_says_what_by_how_much_against_which_threshold_and_what_to_try(failing):
    r, art = failing
    assert r["passed"] is False
    reasons = {v["check"]: v for v in r["verdict"] if v["severity"] == "fail"}
    agree = reasons["prediction agreement float/fixed"]
    assert f"{100 * r['prediction_agreement']:.2f} %" in agree["text"]
    assert "below the required 99.00 %" in agree["text"]
    drop = reasons["accuracy drop float -> fixed (pp)"]
    assert "above the allowed 1.00 pp (--max-accuracy-drop)" in drop["text"]
    hints = " | ".join(drop["try"] + agree["try"])
    assert "more weight bits (now 2" in hints and "loses most in layer" in hints
    assert "recurrent layer" not in hints  # a feed-forward model
    assert not set(drop["try"]) & set(agree["try"])  # shared hints said once
    out = format_summary(r)
    assert "FAILED\n  why: accuracy drop" in out and "try: use more weight bits" in out


def test_a_float_model_at_chance_is_named_as_the_problem():
    """An untrained digits-cnn predicts at chance: the verdict says the float model itself is
    the problem (a warning, beside any failed check), in the result and the CLI summary."""
    torch.manual_seed(0)
    model = dd.build_model(dd.default_config("digits-cnn")).eval()
    test = dd.load_dataset("digits", "test").head(60)
    r, _ = dd.verify_model(model, test, dd.load_dataset("digits", "train").head(32).x, 4,
                           options=VerifyOptions(lava_samples=0, progress=False))
    assert r["float_accuracy"] < 0.3
    warn = [v for v in r["verdict"] if v["severity"] == "warning"]
    assert len(warn) == 1 and "float model itself is at chance" in warn[0]["text"]
    assert "warning: the float model itself is at chance" in format_summary(r)
    good = dict(r, float_accuracy=0.98, verdict=None)
    assert not [v for v in verdict(good) if v["severity"] == "warning"]


def test_decay_table_gives_alpha_beta_and_their_fixed_point_form(passing):
    r, art = passing
    model, _ = dd.load_model(CKPT)
    layers = dd.dalif_layers(model)
    assert [d["population"] for d in r["decay"]] == list(layers)
    for d in r["decay"]:
        p = layers[d["population"]].params()
        assert d["alpha"] == pytest.approx([float(p.alpha.detach())], abs=1e-6)
        assert d["beta"] == pytest.approx([float(p.beta.detach())], abs=1e-6)
        assert d["beta_fixed"] == [1 - dv / 4096 for dv in d["dv"]]
        assert abs(d["beta"][0] - d["beta_fixed"][0]) <= 0.5 / 4096  # dv rounds 4096(1-beta)


def test_decay_table_keeps_per_channel_decays_per_channel():
    from dalif_deploy.fixedpoint.program import FixedProgram

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 5, 3, padding=1)
            self.lif = dd.DALIF(5, granularity="channel")
            self.out = torch.nn.Linear(5 * 8 * 8, 10)

        def forward(self, x):
            return self.out(self.lif(self.conv(x)).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.lif.beta_raw.uniform_(0.2, 1.2)
    test = dd.load_dataset("digits", "test").head(4)
    graph = export_round_trip(net, test, 2, "n", {}, VerifyOptions(progress=False))
    prog = dd.quantize_graph(graph)
    assert isinstance(prog, FixedProgram)
    (row,) = decay_table(prog, graph)
    beta = net.lif.params().beta.detach().double().numpy()
    assert row["beta"] == pytest.approx(beta.tolist(), abs=1e-6) and len(row["dv"]) == 5
    assert row["dv"] == np.rint(4096 * (1 - beta)).astype(int).tolist()
    (blind,) = decay_table(prog)  # a program alone: the fixed-point side only
    assert blind["alpha"] is None and blind["beta"] is None and blind["dv"] == row["dv"]


def _cells(page: str) -> list[str]:
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", page, flags=re.S)


def test_report_reads_as_prose_not_python(passing):
    r, art = passing
    r = dict(r, lava_samples=16, lava_accuracy=1.0, lava_bit_exact=True)
    from dalif_deploy.verification.report import render_report

    page = render_report(r, art)
    heads = re.findall(r"<th>(.*?)</th>", page)
    assert not [h for h in heads if re.fullmatch(r"[a-z]+(_[a-z]+)+", h)], heads
    for cell in _cells(page):
        assert cell not in ("True", "False") and not cell.startswith("["), cell
    assert "16 / 16" in page and "80.6\u2013100.0" in page  # Lava's count and interval
    assert "Does it survive deployment?" in page and "What will it cost?" in page
    assert "binding limit" in page and "nJ, est." in page
    assert "DA-LIF decays per layer" in page and "beta of dv" in page
    assert "fixed \u2192" in page  # the float-vs-fixed confusion matrix


def test_long_per_channel_lists_are_summarised_with_the_values_collapsed():
    from dalif_deploy.verification.report import render_html

    dv = list(range(100, 164))
    page = render_html({"samples": 1, "quant_table": [{"population": "p", "dv": dv}]}, {})
    cell = next(c for c in _cells(page) if "median" in c)
    assert cell.startswith("min 100 \u00b7 median 131 \u00b7 max 163<details>")
    assert "<summary>64 values</summary>" in cell and "100, 101, 102" in cell


# -- the page in a real browser -----------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if os.environ.get("DALIF_SKIP_BROWSER") == "1":
        pytest.skip("DALIF_SKIP_BROWSER=1: browser check skipped on request")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
                    "(`make test` does), or set DALIF_SKIP_BROWSER=1 to skip this check")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _load(browser, path: Path, shot: Path) -> dict:
    """Open ``path``; every request but the page itself is recorded and refused (``data:``
    URIs make none). Returns the requests, console errors, images and page width."""
    url = path.resolve().as_uri()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    seen: dict = {"external": [], "errors": []}

    def route(r):
        if r.request.url == url:
            r.continue_()
        else:
            seen["external"].append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(url, wait_until="load")
    seen["images"] = page.evaluate(
        "[...document.images].map(i => [i.alt, i.complete && i.naturalWidth])")
    seen["overflow"] = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    seen["text"] = page.inner_text("body")
    page.screenshot(path=str(shot), full_page=True)
    ctx.close()
    return seen


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = os.environ.get("DALIF_REPORT_SCREENSHOTS")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    return tmp_path_factory.mktemp("screenshots")


def test_the_browser_check_catches_what_it_looks_for(browser, tmp_path):
    """The harness itself: an external image, a relative one and a script error are seen."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><img alt='a' src='http://example.invalid/x.png'>"
                    "<img alt='b' src='x.png'><script>console.error('boom')</script>")
    seen = _load(browser, page, tmp_path / "bad.png")
    assert sorted(seen["external"]) == sorted(["http://example.invalid/x.png",
                                               (tmp_path / "x.png").as_uri()])
    assert [w for _, w in seen["images"]] == [0, 0] and "boom" in seen["errors"]


@pytest.mark.parametrize("case", ["passing", "failing"])
def test_report_renders_in_a_browser_self_contained(case, browser, shots, request, tmp_path):
    r, art = request.getfixturevalue(case)
    path = tmp_path / f"{case}.html"
    dd.write_report(r, art, path)
    seen = _load(browser, path, shots / f"report-{case}.png")
    assert seen["external"] == [] and seen["errors"] == []
    assert len(seen["images"]) == 4 and all(w and w > 0 for _, w in seen["images"]), seen
    assert seen["overflow"] <= 0, "the page is wider than the window: a table does not fit"
    text = seen["text"]
    assert ("PASSED" if case == "passing" else "FAILED") in text
    if case == "failing":
        assert "below the required 99.00 %" in text and "What to try" in text


def test_lava_failures_are_explained_with_the_first_divergence_or_the_error():
    check = {"check": "Lava bit-exact with emulator", "id": "lava", "value": False,
             "limit": True, "ok": False}
    div = {"layer": "lif2", "what": "spike", "step": 3, "sample": 1, "neuron": [4, 0, 2],
           "emulator": 1, "lava": 0}
    (v,) = verdict({"checks": [check], "lava_first_divergence": div})
    assert "first at layer lif2 (spike, step 3, sample 1, neuron [4, 0, 2]" in v["text"]
    assert "toolchain bug" in v["try"][0] and "--save-program" in v["try"][0]
    (v,) = verdict({"checks": [check], "lava_error": "Lava run timed out after 5 s"})
    assert v["text"] == "Lava did not complete: Lava run timed out after 5 s"
    assert "--timeout" in v["try"][0]


@pytest.fixture
def figures(monkeypatch):
    """The plot functions return their matplotlib figure instead of a PNG."""
    from dalif_deploy.verification import plots as report_plots

    monkeypatch.setattr(report_plots, "_png", lambda fig: fig)
    return report_plots


def test_value_axes_start_at_zero_in_percent(figures):
    layers = [{"name": f"l{i}", "spike_agreement": 0.95 + i / 100, "float_rate": 0.1,
               "fixed_rate": 0.12} for i in range(3)]
    a, b = figures.plot_agreement(layers).axes
    assert a.get_ylim()[0] == 0 and a.get_ylim()[1] >= 100 and "%" in a.get_ylabel()
    assert b.get_ylim()[0] == 0 and b.patches[0].get_height() == pytest.approx(5.0)
    (ax,) = figures.plot_firing_rates(layers).axes
    assert ax.get_ylim()[0] == 0 and "%" in ax.get_ylabel()
    assert [p.get_height() for p in ax.patches][:3] == pytest.approx([10.0] * 3)


def test_weight_error_plot_scales_to_25_synapses_without_covering_the_axes(figures):
    from dalif_deploy.fixedpoint.program import WeightErrors

    errs = {f"s{i}": WeightErrors((1, 2, 1), (-0.01, -0.001, 0.001, 0.01 * (1 + i / 10)),
                                  0.01 * (1 + i / 10)) for i in range(25)}
    fig = figures.plot_weight_error(errs)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(errs)
    assert len({tuple(p.get_facecolor()) for p in ax.patches}) == 2  # mean and max, not 25
    fig.canvas.draw()
    box, leg = ax.get_window_extent(), ax.get_legend().get_window_extent()
    assert leg.y0 >= box.y1 - 1  # the legend sits above the axes, not on the bars
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths[-1] == pytest.approx(100 * 0.01 * 3.4)  # max |e| of s24, in percent


def test_raster_marks_where_float_and_fixed_point_disagree(figures):
    f = np.zeros((3, 1, 4), np.uint8)
    q = f.copy()
    f[0, 0, 1] = q[0, 0, 1] = 1  # both
    f[1, 0, 2] = 1  # float only
    q[2, 0, 3] = q[2, 0, 0] = 1  # fixed only
    (ax,) = figures.plot_raster(f, q, "h").axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["both (1)", "float only (1)", "fixed only (2)"]
    assert ax.get_title().endswith("3 mismatches")


def test_the_reference_device_is_recorded_and_a_gpu_one_is_said(passing):
    """The JSON names where the float and NIR references ran (cpu by default, no note); a GPU
    there gets a note in the summary, since a tie may round otherwise than on the CPU."""
    r, _ = passing
    assert r["reference_device"] == "cpu"
    assert "references ran on" not in format_summary(r)
    out = format_summary(dict(r, reference_device="cuda:1"))
    assert "note: the float and NIR references ran on cuda:1 (IEEE float32)" in out

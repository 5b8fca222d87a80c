"""The Snakemake HTML report in a real browser: headless Chromium renders it, clicks through it.

The report is a single-page React app: the raw file holds only a loading screen and the data as
JavaScript; everything a reader sees is built by the scripts. So these tests look at the DOM that
Chromium dumps after the scripts ran, counting only visible text (never <script> or <style>), and
at a screenshot.

CI installs Chromium first (`bash .ci/browser`: Debian's `chromium`). Without /usr/bin/chromium
these tests skip, and fail under COPRA_NO_SKIPS=1 (CI).
"""

import base64
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, skip_or_fail, snakemake
from matplotlib.image import imread

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 900)
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=60000",  # virtual ms for the scripts and timers: a few s of real time
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)

# Prepended to <head>: records uncaught errors from every script of the report.
PROBE_HEAD = """<script>
window.copraErrors = [];
window.addEventListener("error", (event) => window.copraErrors.push(String(event.message)));
window.addEventListener("unhandledrejection", (event) =>
    window.copraErrors.push("unhandled rejection: " + String(event.reason)));
</script>"""
# Appended to <body>: what a reader does, by clicks on the rendered page (no calls into the app):
# for each category that holds figures, open it, then each file's eye button in turn, and wait
# for the figure to load. The outcome goes into a hidden <pre id="copra-probe"> as JSON:
# {"problem": null or what went wrong, "errors": [...], "images": [{category, file, width, ...}]}.
PROBE_BODY = """<script>
(function () {
    const CATEGORIES = __CATEGORIES__;
    const images = [];
    const rows = {};  // category: the first cell of each row of its table
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    function byText(selector, text) {
        return Array.from(document.querySelectorAll(selector))
            .find((element) => element.textContent.trim() === text);
    }
    async function waitFor(what, find, tries = 50) {
        for (let k = 0; k < tries; k++) {
            const found = find();
            if (found) return found;
            await sleep(100);
        }
        throw new Error("timed out waiting for " + what);
    }
    function viewRows() {  // rows whose eye button shows the file inside the report
        return Array.from(document.querySelectorAll("tr"))
            .filter((row) => row.querySelector("a[iconname='eye'][href='#']"));
    }
    async function openCategory(name) {
        const back = byText("a", "Results");
        if (!byText("a", name) && back) back.click();  // from a file's view back to the menu
        (await waitFor("the menu entry " + name, () => byText("a", name))).click();
        const found = await waitFor("the files of " + name, () => viewRows().length && viewRows());
        rows[name] = Array.from(document.querySelectorAll("tr td:first-child"))
            .map((cell) => cell.textContent.trim());
        return found;
    }
    async function run() {
        for (const category of CATEGORIES) {
            const count = (await openCategory(category)).length;
            for (let k = 0; k < count; k++) {
                const row = (await openCategory(category))[k];
                row.querySelector("a[iconname='eye']").click();
                const image = await waitFor("an image of " + category, () =>
                    document.querySelector("div.p-3 img[src^='data:image/']"));
                await waitFor("the image to load", () => image.complete);
                const file = (image.src.match(/filename=([^;]+);/) || [null, "?"])[1];
                images.push({category: category, file: file, width: image.naturalWidth,
                             height: image.naturalHeight});
            }
        }
    }
    function finish(problem) {
        const pre = document.createElement("pre");
        pre.id = "copra-probe";
        pre.hidden = true;
        pre.textContent = JSON.stringify({problem: problem, errors: window.copraErrors,
                                          images: images, rows: rows});
        document.body.appendChild(pre);
    }
    window.addEventListener("load", () => run().then(() => finish(null),
                                                      (error) => finish(String(error))));
})();
</script>"""
# The figures of the full demo's report, by category: every one must load in the browser.
TASKS = ("interaction", "localization", "membrane", "rna_affinity", "stability")
# methods: [] (continual learning, design only): no embeddings
UNTRAINED_TASKS = ("compartments", "organism_a", "organism_b", "fitness")
FIGURES = {
    "Data": [f"{task}.png" for task in sorted(TASKS + UNTRAINED_TASKS)],
    "Embeddings": [f"{task}.png" for task in TASKS],
    "Training": ["rank_allocation.png", "training_curves.png"],
    "Evaluation": ["metrics.png"],
    "Merging": ["localization.png", "stability.png"],
    "Linear mode connectivity": ["lmc.png"],
    "Federated": ["federated.png"],
    "Continual": ["continual.png"],
    "Design": ["design.png"],
    "Shapley": ["shapley.png"],
    "Pruning": ["pruning.png"],
    "Papers": [
        "copra_affinity.png",
        "copra_lmc.png",
        "copra_table_r3.png",
        "peft_parameters.png",
    ],
    "Structures": ["complexes.png"],  # opened last: the screenshot's figure
}


class _VisibleText(HTMLParser):
    """The text of an HTML document outside <script>, <style> and <noscript>."""

    HIDDEN = {"script", "style", "noscript"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.HIDDEN

    def handle_endtag(self, tag):
        self.depth -= tag in self.HIDDEN

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.parts.append(" ".join(data.split()))


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.parts)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        skip_or_fail(f"{CHROMIUM} not found: install it with `bash .ci/browser` (Debian chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def report(chromium, demo_run) -> Path:
    """report.html of the whole demo (as `make demo` writes it), written by Snakemake."""
    snakemake(demo_run, "--configfile", REPO / "config.yaml", "--report", "report.html")
    return demo_run / "report.html"


@pytest.fixture(scope="module")
def driven_report(report) -> Path:
    """A copy of the report with the probe scripts around it."""
    html = report.read_text()
    # The first <head> and the last </body> are the page's own: the scripts contain more.
    html = html.replace("<head>", "<head>" + PROBE_HEAD, 1)
    body_end = html.rindex("</body>")
    probe = PROBE_BODY.replace("__CATEGORIES__", json.dumps(list(FIGURES)))
    html = html[:body_end] + probe + html[body_end:]
    driven = report.with_name("report_driven.html")
    driven.write_text(html)
    return driven


def run_chromium(chromium, page: Path, tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{page.stem}"
    command = [str(chromium), *CHROMIUM_ARGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        # Without a D-Bus, Chromium logs many harmless dbus errors: leave them out.
        stderr = [line for line in result.stderr.splitlines() if "dbus" not in line]
        raise AssertionError(f"chromium exit {result.returncode}:\n" + "\n".join(stderr[-40:]))
    return result


def dump_dom(chromium, page: Path, tmp_path) -> str:
    return run_chromium(chromium, page, tmp_path, "--dump-dom").stdout


def test_report_renders_its_landing_page(chromium, report, tmp_path):
    # Without JavaScript the page is only the loading screen.
    assert "planted demo signal" not in visible_text(report.read_text())
    text = visible_text(dump_dom(chromium, report, tmp_path))
    # The navigation bar, with the categories of the rules' report items ...
    for label in (
        "Workflow",
        "Statistics",
        "About",
        "Results",
        *FIGURES,
        "Runs",
        "Summary",
        "Reproducibility",
    ):
        assert label in text.splitlines(), (label, text)
    # ... and the workflow description, rendered from workflow/report/workflow.rst.
    assert "planted demo signal" in text, text
    assert "['head', 'lora', 'copra', 'full']" in text and "esm2_t6_8M_UR50D" in text, text


def test_every_figure_loads(chromium, driven_report, tmp_path):
    dom = dump_dom(chromium, driven_report, tmp_path)
    start = dom.find('<pre id="copra-probe" hidden="">')
    assert start >= 0, "the probe did not finish: the page never loaded?"
    probe = json.loads(visible_text(dom[start : dom.index("</pre>", start) + 6]))
    assert probe["problem"] is None and probe["errors"] == [], probe
    shown = {}
    for image in probe["images"]:
        assert image["width"] > 300 and image["height"] > 200, f"a broken image: {image}"
        shown.setdefault(image["category"], []).append(image["file"])
    assert shown == FIGURES
    # The metrics table is listed (its eye button downloads it) beside the figure.
    assert "results/metrics.tsv" in probe["rows"]["Evaluation"], probe["rows"]


def test_the_metrics_table_is_in_the_report(report):
    # The report embeds each result as a data URI; the metrics table's header is in it.
    html = report.read_text()
    match = re.search(
        r"data:text/tab-separated-values;charset=utf8;filename=metrics\.tsv;"
        r"base64,([A-Za-z0-9+/=]+)",
        html,
    )
    assert match, "metrics.tsv is not in the report"
    table = base64.b64decode(match.group(1)).decode()
    assert table.startswith("task\tmethod\tseed\tsplit\tmetric\tvalue\tci_low\tci_high\n")
    assert len(table.splitlines()) > 100


@pytest.mark.parametrize("view", ["landing", "figure"])
def test_report_screenshot(chromium, report, driven_report, tmp_path, view):
    page = report if view == "landing" else driven_report
    png = tmp_path / f"report-{view}.png"
    run_chromium(chromium, page, tmp_path, f"--screenshot={png}")
    assert png.stat().st_size > 20_000, png.stat().st_size
    pixels = imread(png)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    colours = np.unique((pixels * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"{len(colours)} colours: a blank or one-colour page?"
    # Right of the navigation bar: the workflow description and the rule graph (about 1.5% of
    # the area drawn), or the last figure the probe opened (complexes.png, about 20%). The
    # navigation bar's colours are left alone: the report styles itself with Tailwind's
    # in-browser compiler, which races with React, and under load the bar now and then stays
    # light grey (seen 2 in 10 times).
    content = pixels[100:700, 350:]
    drawn = (content.min(axis=2) < 0.9).mean()
    least = 0.05 if view == "figure" else 0.005
    assert drawn > least, f"only {drawn:.2%} of the content is drawn: a blank page?"

"""The demo in a real browser: headless Debian Chromium driven by Playwright loads the page, uploads an
example image, presses Generate, waits for the 3D viewer to draw the mesh, moves the scale slider,
types a scale into the slider's number box (Enter updates the mesh), types the last scale and saves a
screenshot of the full mesh; then clicks the second picture of the search's samples and waits for that
sample's mesh.

Needs the Debian package `chromium` (`apt-get install -y chromium`); Playwright's own browser
download (`playwright install`) is never used. The same code makes the README's screenshot:

    python tests/test_app_browser.py --checkpoint checkpoints --image examples/X.png --out docs/app.png --seed 0

and, with several images, a sheet of the Image-to-3D row of each page (the README's photos):

    python tests/test_app_browser.py --checkpoint checkpoints --image A.jpg B.jpg --out docs/photos.png --seed 0
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000


def _drawn_fraction(png: bytes) -> float:
    """Share of a viewer screenshot that is not the white background: how much of a model is drawn."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(rgb - 255).max(-1) > 24).mean())


def _wait_for_model(page, viewer: str) -> float:
    """Wait until the viewer's canvas shows a model (Babylon draws it a moment after the file loads)."""
    canvas = page.locator(f"{viewer} canvas")
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    for _ in range(TIMEOUT_MS // 250):
        drawn = _drawn_fraction(canvas.screenshot())
        if drawn > 0.01:
            return drawn
        page.wait_for_timeout(250)
    raise AssertionError(f"the 3D viewer {viewer} never drew a model")


def _drawn_colour(png: bytes) -> np.ndarray:
    """Mean RGB [3] of the drawn (not white) pixels of a viewer screenshot: the mesh's colour as shown."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    return rgb[np.abs(rgb - 255).max(-1) > 24].mean(0)


# The cells of the scale readout's table that wrap onto a second line, and whether the table runs past its box.
READOUT_FIT = """() => {
  const table = document.querySelector('#scale-readout table');
  if (!table) return null;
  const lines = (cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const tops = [...range.getClientRects()].map((rect) => rect.top).sort((a, b) => a - b);
    return tops.filter((top, i) => i === 0 || top - tops[i - 1] > 4).length;
  };
  const wrapped = [...table.querySelectorAll('th, td')].filter((cell) => lines(cell) > 1).map((c) => c.innerText);
  const box = document.querySelector('#scale-readout').getBoundingClientRect();
  return {wrapped, overflows: table.getBoundingClientRect().right > box.right + 1};
}"""

READOUT = r"Scale (\d+) of (\d+):[^\n]*"  # the scale readout's line (the element also shows progress)
WAIT_FOR_READOUT = ("before => { const m = (document.querySelector('#scale-readout')?.innerText ?? '')"
                    f".match(/{READOUT}/); return m !== null && m[0] !== before && m; }}")


SAMPLES = "#samples-gallery"
CHOSEN = "() => (document.querySelector('#generate-info')?.innerText ?? '').startsWith('Sample seed')"


def _readout(page, before: str | None = None) -> str:
    """The readout's line, once it differs from `before` (waits for the handler to answer)."""
    return page.wait_for_function(WAIT_FOR_READOUT, arg=before, timeout=TIMEOUT_MS).json_value()[0]


def _open(browser, url: str, width: int):
    """A page of the demo at `url`, `width` px wide, that reaches nothing else (offline and hermetic)."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
    page.goto(url)
    page.locator("#generate-button").wait_for(timeout=TIMEOUT_MS)
    return page


def drive_demo(url: str, image: str | Path, screenshot: str | Path, example_name: str | None = None,
               after_generate=None, seed: int | None = None, width: int = 1400) -> dict:
    """Drive the demo at `url` in headless Chromium; writes a full-page PNG to `screenshot` and
    returns what it saw (the header, the generation info, readouts before and after moving the slider
    and after typing a scale, drawn share and colour of the viewer, how the readout's table fits).
    `after_generate()`, if given, is called once the mesh is shown (the tab is still open). `seed`:
    untick "Randomise seed" and generate with this one (a reproducible picture)."""
    from playwright.sync_api import sync_playwright

    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = _open(browser, url, width)
            seen["header"] = page.locator("#header").inner_text()
            if example_name is not None:  # the examples gallery shows the folder's images
                page.locator(f"img[src$='{example_name}']").first.wait_for(timeout=TIMEOUT_MS)
            page.locator("#input-image input[type=file]").set_input_files(str(image))
            page.locator("#model-input img").wait_for(timeout=TIMEOUT_MS)  # the preprocessed preview
            if seed is not None:
                page.get_by_text("Sampling", exact=True).click()
                page.get_by_label("Randomise seed").uncheck()
                page.get_by_label("Seed", exact=True).fill(str(seed))
                page.get_by_text("Sampling", exact=True).click()  # closed again, as a visitor sees it
            page.locator("#generate-button").click()
            seen["readout"] = _readout(page)
            seen["info"] = page.locator("#generate-info").inner_text()
            seen["drawn"] = _wait_for_model(page, "#mesh-view")
            seen["readout_fit"] = page.evaluate(READOUT_FIT)
            page.wait_for_timeout(500)  # the viewer's finished frame
            seen["colour"] = _drawn_colour(page.locator("#mesh-view canvas").screenshot())
            if after_generate is not None:
                after_generate()
            # Move the slider to about a fifth of its range: the mesh of the first few scales.
            slider = page.locator("#scale-slider input[type=range]")
            slider.scroll_into_view_if_needed()  # on a narrow page the columns stack: it may be below the fold
            box = slider.bounding_box()
            page.mouse.click(box["x"] + 0.2 * box["width"], box["y"] + box["height"] / 2)
            seen["scaled_readout"] = _readout(page, before=seen["readout"])
            seen["slider"] = int(slider.input_value())
            seen["scaled_drawn"] = _wait_for_model(page, "#mesh-view")
            # Type a scale into the slider's number box and press Enter: the mesh follows.
            seen["typed"] = 1 if seen["slider"] != 1 else 2
            number = page.locator("#scale-slider input[type=number]")
            number.fill(str(seen["typed"]))
            number.press("Enter")
            seen["typed_readout"] = _readout(page, before=seen["scaled_readout"])
            # Back to the last scale (the full mesh) for the picture.
            total = seen["readout"].split(" of ")[1].split(":")[0]
            number.fill(total)
            number.press("Enter")
            seen["final_readout"] = _readout(page, before=seen["typed_readout"])
            _wait_for_model(page, "#mesh-view")
            page.wait_for_timeout(500)  # let the viewer finish its frame before the picture
            page.screenshot(path=str(screenshot), full_page=True)
            # The search's samples, a picture each, best fit first: clicking the second shows that sample instead.
            page.wait_for_function(f"() => document.querySelectorAll('{SAMPLES} img').length > 1", timeout=TIMEOUT_MS)
            seen["samples"] = page.locator(f"{SAMPLES} img").count()
            page.locator(f"{SAMPLES} img").nth(1).click()
            page.wait_for_function(CHOSEN, timeout=TIMEOUT_MS)
            seen["chosen_info"] = page.locator("#generate-info").inner_text()
            seen["chosen_drawn"] = _wait_for_model(page, "#mesh-view")
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install -y chromium (Debian)")
def test_generate_and_scrub_in_a_browser(app_url, examples_dir, tmp_path):
    from vat.app.sessions import OUTPUT_ROOT
    from vat.pipeline import DEFAULT_GENERATE_SEARCH

    shot = tmp_path / "demo.png"
    before = set(OUTPUT_ROOT.iterdir())
    written = []  # the files of this browser's session, while its tab is open
    seen = drive_demo(app_url, examples_dir / "red-disc.png", shot, example_name="red-disc.png", seed=4321,
                      after_generate=lambda: written.extend(f for d in set(OUTPUT_ROOT.iterdir()) - before
                                                            for f in d.glob("*.glb")))
    assert len(written) == 1 and written[0].name.startswith("generated-")
    # The browser has closed the tab: demo.unload removes the session's files.
    for _ in range(40):
        if not written[0].parent.exists():
            break
        time.sleep(0.25)
    assert not written[0].parent.exists(), "the closed session's files are still there"
    assert seen["info"].startswith("Seed 4321 ")  # "Randomise seed" unticked, the typed seed used
    total = int(seen["readout"].split(" of ")[1].split(":")[0])
    assert total > 2 and seen["drawn"] > 0.01
    assert 1 <= seen["slider"] < total and seen["scaled_readout"].startswith(f"Scale {seen['slider']} of {total}")
    assert seen["scaled_drawn"] > 0.01
    assert seen["typed_readout"].startswith(f"Scale {seen['typed']} of {total}")
    assert seen["final_readout"].startswith(f"Scale {total} of {total}")
    assert "How to use:" in seen["header"] and "Model:" in seen["header"]
    assert seen["samples"] == DEFAULT_GENERATE_SEARCH and seen["chosen_drawn"] > 0.01
    assert f"2nd best outline of {DEFAULT_GENERATE_SEARCH}" in seen["chosen_info"]
    with Image.open(shot) as picture:
        assert picture.width == 1400 and picture.height >= 1000
    _assert_fits_and_reads(seen)


def _assert_fits_and_reads(seen: dict) -> None:
    """The readout's table fits its box without a cell broken over two lines, and the mesh is drawn grey
    and darker than the page (the viewer's own lights made it a pale lilac)."""
    assert seen["readout_fit"] == {"wrapped": [], "overflows": False}
    red, green, blue = seen["colour"]
    assert max(red, green, blue) - min(red, green, blue) < 12 and max(red, green, blue) < 200, seen["colour"]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install -y chromium (Debian)")
def test_a_narrow_page_fits_and_a_bad_image_is_said_once(app_url, examples_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    seen = drive_demo(app_url, examples_dir / "red-disc.png", tmp_path / "demo-820.png", width=820)
    _assert_fits_and_reads(seen)
    corrupt = tmp_path / "broken.png"
    png = (examples_dir / "red-disc.png").read_bytes()
    corrupt.write_bytes(png[: len(png) // 2])  # truncated
    message = "broken.png could not be decoded"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = _open(browser, app_url, 1400)
            page.locator("#input-image input[type=file]").set_input_files(str(examples_dir / "red-disc.png"))
            page.locator("#generate-button").click()
            _readout(page)
            # A bad image after a good one: the preview says what is wrong beside the image ...
            page.locator("#input-image input[type=file]").set_input_files(str(corrupt))
            page.get_by_text(message).first.wait_for(timeout=TIMEOUT_MS)
            # ... and Generate says it once, in one pop-up, leaving the other controls as they were.
            page.locator("#generate-button").click()
            toast = page.locator(".toast-body").first
            toast.wait_for(timeout=TIMEOUT_MS)
            page.wait_for_timeout(2000)  # time for a second message to arrive, were there one
            page.screenshot(path=str(tmp_path / "bad-image.png"), full_page=True)
            assert toast.inner_text().count(message) == 1 and page.locator(".toast-body").count() == 1
            assert "Error" not in page.locator("#scale-slider").inner_text()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    """Launch the demo over a checkpoint, drive it, and write the screenshot (for the README)."""
    from conftest import free_port

    app = load_app()

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--checkpoint", default=None, help="folder or hub id (default: the app's default)")
    parser.add_argument("--image", required=True, nargs="+", help="the image(s) to upload")
    parser.add_argument("--examples", default=str(app.EXAMPLES_DIR))
    parser.add_argument("--out", required=True, help="where to write the PNG")
    parser.add_argument("--seed", type=int, help="generate with this seed (default: the demo's random one)")
    args = parser.parse_args(argv)
    demo = app.build_demo(args.checkpoint, args.examples)
    port = free_port()
    app.serve(demo, port=port, prevent_thread_lock=True)
    shots = [args.out] if len(args.image) == 1 else [f"{args.out}.{k}.png" for k in range(len(args.image))]
    try:
        for image, shot in zip(args.image, shots):
            seen = drive_demo(f"http://127.0.0.1:{port}/", image, shot, seed=args.seed)
            print(f"{image}: {seen['readout']} / after the slider: {seen['scaled_readout']}")
    finally:
        demo.close()
    if len(shots) > 1:
        sheet_of_rows(shots, args.out)


def load_app():
    """app.py (the Space's entry point, beside tests/) as a module, loaded from its file: run as a script,
    this file has tests/ on the path, not the repository."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("app", Path(__file__).resolve().parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The Image-to-3D row of a 1400 px wide page (input, what the model sees with the background note, the
# mesh and the scale slider), and the scale of each in the sheet of several.
ROW_BOX, SHEET_SCALE = (90, 295, 1310, 810), 0.55


def sheet_of_rows(shots: list[str], out: str) -> None:
    """Two columns of the pages' Image-to-3D rows; the single screenshots are removed."""
    rows = []
    for shot in shots:
        with Image.open(shot) as page:
            row = page.convert("RGB").crop(ROW_BOX)
        rows.append(row.resize((round(row.width * SHEET_SCALE), round(row.height * SHEET_SCALE)), Image.LANCZOS))
        Path(shot).unlink()
    width, height = rows[0].size
    sheet = Image.new("RGB", (2 * width, height * ((len(rows) + 1) // 2)), "white")
    for k, row in enumerate(rows):
        sheet.paste(row, ((k % 2) * width, (k // 2) * height))
    sheet.save(out)
    print(f"{out}: {len(rows)} pages")


if __name__ == "__main__":
    main()

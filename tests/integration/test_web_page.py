"""School staff use the web page in a real headless Chromium: round, list, filter, Excel download."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.serving_fixtures import ServingHome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def test_a_school_sees_its_list_filters_it_and_downloads_excel(browser, service_url: str, serving_home: ServingHome, tmp_path) -> None:
    from openpyxl import load_workbook

    page = browser.new_page(accept_downloads=True)
    page.goto(service_url + "/ews/")
    page.fill("#token", serving_home.tokens["school"])
    page.click("#login")
    page.wait_for_function("document.querySelectorAll('#round option').length > 0", timeout=15_000)
    page.select_option("#round", serving_home.round_id)
    page.click("#show")
    try:
        page.wait_for_function("(document.querySelector('#list').dataset.query || '').includes(%r)"
                               % serving_home.round_id, timeout=15_000)
        page.wait_for_selector("#list tbody tr", timeout=15_000)
    except Exception as exc:  # noqa: BLE001 - say what the page said
        raise AssertionError("no rows; page status: " + page.inner_text("#status")) from exc
    all_rows = page.locator("#list tbody tr").count()
    assert all_rows > 0
    assert "ความเสี่ยง" in page.inner_text("#list tbody")
    page.select_option("#group", "problem")
    page.click("#show")
    # The table says which query it shows; wait for the filtered one, not any finished list.
    page.wait_for_function("(document.querySelector('#list').dataset.query || '').includes('group=problem')",
                           timeout=15_000)
    groups = page.locator("#list tbody tr td:nth-child(5)").all_inner_texts()
    assert groups, "the school's list should hold students of the problem group"
    assert all(g == "มีปัญหา" for g in groups) and len(groups) < all_rows
    with page.expect_download(timeout=15_000) as dl:
        page.click("#excel")
    path = tmp_path / "list.xlsx"
    dl.value.save_as(path)
    rows = list(load_workbook(path).active.iter_rows(values_only=True))
    assert "ชื่อ-สกุล" in rows[1] and len(rows) - 2 == len(groups)
    page.close()


def test_the_page_shows_a_clear_message_for_a_wrong_token(browser, service_url: str) -> None:
    page = browser.new_page()
    page.goto(service_url + "/ews/")
    page.fill("#token", "ews_00000000_wrong")
    page.click("#login")
    page.wait_for_function("document.querySelector('#status').textContent.length > 0", timeout=10_000)
    assert "token" in page.inner_text("#status")
    assert page.locator("#list tbody tr").count() == 0
    page.close()


def test_a_slow_earlier_list_never_replaces_the_list_the_school_asked_for(browser, service_url: str,
                                                                         serving_home: ServingHome) -> None:
    page = browser.new_page()
    held = []

    def hold_unfiltered(route) -> None:  # the list login asks for is held back until the filtered one is drawn
        if "group=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    page.route("**/students?*", hold_unfiltered)
    page.goto(service_url + "/ews/")
    page.fill("#token", serving_home.tokens["school"])
    page.click("#login")
    page.wait_for_function("document.querySelectorAll('#round option').length > 0", timeout=15_000)
    page.wait_for_function("document.querySelector('#status').textContent.includes('loading')", timeout=15_000)
    assert len(held) == 1
    page.select_option("#group", "problem")
    page.click("#show")
    try:
        page.wait_for_function("(document.querySelector('#list').dataset.query || '').includes('group=problem')",
                               timeout=15_000)
    except Exception as exc:  # noqa: BLE001 - say what the page said
        raise AssertionError("filtered list not drawn; page status: " + page.inner_text("#status")
                             + "; round: " + page.input_value("#round")) from exc
    filtered = page.locator("#list tbody tr td:nth-child(5)").all_inner_texts()
    with page.expect_response(lambda r: "/students?" in r.url and "group=" not in r.url, timeout=15_000):
        held[0].continue_()
    # Give the late answer time to be handled (it must be dropped). Too short a wait could only
    # let a broken page pass, never fail a working one.
    page.wait_for_timeout(500)
    assert page.locator("#list tbody tr td:nth-child(5)").all_inner_texts() == filtered
    assert "group=problem" in page.locator("#list").get_attribute("data-query")
    assert "loading" not in page.inner_text("#status")
    page.close()


def test_a_school_records_an_action_from_the_page_and_the_not_contacted_filter_drops_the_pupil(
        browser, service_url: str, serving_home: ServingHome) -> None:
    page = browser.new_page()
    page.goto(service_url + "/ews/")
    page.fill("#token", serving_home.tokens["school"])
    page.click("#login")
    page.wait_for_function("document.querySelectorAll('#round option').length > 0", timeout=15_000)
    page.select_option("#round", serving_home.round_id)
    page.check("#not_contacted")
    page.click("#show")
    page.wait_for_function("(document.querySelector('#list').dataset.query || '').includes('not_contacted=true')",
                           timeout=15_000)
    before = page.locator("#list tbody tr").count()
    assert before > 0, "some pupil of the school should not have been contacted yet"
    row = page.locator("#list tbody tr").first
    key = row.get_attribute("data-key")
    assert page.locator("#a_action option").count() > 10  # the catalogue, loaded from the API
    row.locator("button.record").click()
    assert page.is_visible("#actionForm")
    page.select_option("#a_action", "home_visit")
    page.select_option("#a_status", "done")
    page.fill("#a_due", "2099-01-01")  # more than two years ahead: the service names the field
    page.click("#a_save")
    page.wait_for_function("document.querySelector('#a_msg').textContent.includes('follow_up_due')", timeout=15_000)
    page.fill("#a_due", "")
    page.click("#a_save")
    page.wait_for_function("document.querySelector('#actionForm').dataset.saved === %r" % key, timeout=15_000)
    # Redrawn with the filter still on: the pupil just contacted has left the not-contacted list.
    page.wait_for_function("(document.querySelector('#list').dataset.query || '').includes('not_contacted=true')",
                           timeout=15_000)
    keys = page.eval_on_selector_all("#list tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert key not in keys and len(keys) == before - 1
    page.uncheck("#not_contacted")
    page.click("#show")
    page.wait_for_function("!(document.querySelector('#list').dataset.query || '').includes('not_contacted') && "
                           "document.querySelector('#list').dataset.query !== ''", timeout=15_000)
    cells = page.locator(f"#list tbody tr[data-key='{key}'] td").all_inner_texts()
    assert "เยี่ยมบ้าน" in cells[7] and cells[8] == "ดำเนินการแล้ว"
    page.close()

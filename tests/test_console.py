"""The web console in a real browser: headless Chromium driven by Selenium against a real
daemon. Sign in, find an entity among 10,000, read its values per environment and its
history, resolve a conflict, preview and run a promote, create a milestone and roll back to
it, see another client's write appear in the live log, a denied action refused with nothing
written, and a hostile value shown as text. Screenshots of each page go to
``docs/console/`` when ``CONFLUX_SCREENSHOTS`` names that directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from conflux.actors import Actor
from conflux.engine import Engine
from conftest import ZARA
from test_daemon import daemon, key, KEYS, make_project

XSS = "<img src=x onerror=alert(1)>"
ENTITIES = 10_000


def _browser():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary and driver, "the console's tests need chromium and chromium-driver " \
                              "(make test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("console"))
    engine = Engine(project)
    ops = [{"type": "set_field", "entity_id": f"service.s{i:05d}", "field": "image",
            "value": f"img:{i}"} for i in range(ENTITIES)]
    engine.apply(ops, ZARA)
    engine.apply([{"type": "set_field", "entity_id": "service.shop", "field": "image",
                   "value": "shop:1", "intent": "first release"},
                  {"type": "set_field", "entity_id": "service.shop", "field": "replicas",
                   "value": 4, "env": "staging", "intent": "staging load test"},
                  {"type": "set_field", "entity_id": "service.xss", "field": "image",
                   "value": XSS, "intent": XSS},
                  {"type": "set_field", "entity_id": "service.shop", "field": "tier",
                   "value": "web", "op_id": "tier-a"}], ZARA)
    # a concurrent write to the review field: a conflict to resolve
    engine.apply([{"type": "set_field", "entity_id": "service.shop", "field": "tier",
                   "value": "batch", "base": [], "intent": "batch is cheaper"}],
                 Actor("ana", "human"))
    engine.close()
    with daemon(project) as (url, _):
        driver = _browser()
        try:
            yield url, driver
        finally:
            driver.quit()


def wait(driver, condition, timeout=10):
    return WebDriverWait(driver, timeout).until(condition)


def text_of(driver, element_id, contains, timeout=10):
    wait(driver, ec.text_to_be_present_in_element((By.ID, element_id), contains), timeout)
    return driver.find_element(By.ID, element_id).text


def shot(driver, name):
    where = os.environ.get("CONFLUX_SCREENSHOTS")
    if where:
        os.makedirs(where, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(os.path.join(where, f"{name}.png"))


def sign_in(driver, url, actor="zara"):
    driver.get(f"{url}/ui/#/signin")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{url}/ui/")
    box = wait(driver, ec.presence_of_element_located((By.ID, "key")))
    box.send_keys(KEYS[actor][1])
    driver.find_element(By.ID, "signin-go").click()
    text_of(driver, "ops-total", "")
    wait(driver, lambda d: d.find_element(By.ID, "ops-total").text.isdigit())


def go(driver, url, hash_):
    driver.get(f"{url}/ui/{hash_}")


def test_the_files_are_served_under_a_strict_policy(site):
    url, _ = site
    r = requests.get(f"{url}/ui/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script type=\"module\" src=\"/ui/app.js\">" in r.text and "onerror" not in r.text
    assert requests.get(f"{url}/ui/app.js", timeout=10).headers["Content-Type"].startswith(
        "text/javascript")
    assert requests.get(f"{url}/ui/nothing.js", timeout=10).status_code == 404
    # the data is not: every page's data is a REST call with credentials
    assert requests.get(f"{url}/v1/entities", timeout=10).status_code == 401


def test_a_wrong_key_is_refused_and_a_good_one_signs_in(site):
    url, driver = site
    driver.get(f"{url}/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{url}/ui/")
    wait(driver, ec.presence_of_element_located((By.ID, "key"))).send_keys("wrong-key-000000000")
    driver.find_element(By.ID, "signin-go").click()
    assert "not accepted" in text_of(driver, "flash", "not accepted")
    shot(driver, "signin")
    sign_in(driver, url)
    assert driver.find_element(By.ID, "nav").is_displayed()
    assert int(driver.find_element(By.ID, "ops-total").text) >= ENTITIES
    text_of(driver, "env-list", "staging")
    text_of(driver, "conflict-count", "1")
    shot(driver, "overview")


def test_find_an_entity_among_ten_thousand_and_read_it(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/state")
    text_of(driver, "state-count", "matching ids")
    assert f"{ENTITIES + 2} matching" in driver.find_element(By.ID, "state-count").text
    rows = driver.find_elements(By.CSS_SELECTOR, "#state-rows a.entity")
    assert len(rows) == 100  # a page, from the server
    search = driver.find_element(By.ID, "state-q")
    search.send_keys("shop")
    driver.find_element(By.ID, "state-search").click()
    text_of(driver, "state-count", "1 matching")
    shot(driver, "state")
    driver.find_element(By.LINK_TEXT, "service.shop").click()
    wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "tr[data-field='image']")))
    image = {c.get_attribute("data-env"): c for c in driver.find_elements(
        By.CSS_SELECTOR, "tr[data-field='image'] td.value")}
    assert image["production"].text == "shop:1" and "inherited" not in \
        image["production"].get_attribute("class")
    assert "inherited" in image["staging"].get_attribute("class")
    assert image["staging"].get_attribute("data-from") == "from production"
    replicas = {c.get_attribute("data-env"): c.text for c in driver.find_elements(
        By.CSS_SELECTOR, "tr[data-field='replicas'] td.value")}
    assert replicas == {"production": "1", "staging": "4", "development": "4"}
    assert "max" in driver.find_element(By.CSS_SELECTOR, "tr[data-field='replicas']").text
    shot(driver, "entity")
    driver.find_element(By.ID, "entity-history").click()
    text_of(driver, "history-rows", "first release")
    rows = driver.find_elements(By.CSS_SELECTOR, "#history-rows tr")
    assert any("human:zara" in r.text and "staging load test" in r.text for r in rows)
    Select(driver.find_element(By.ID, "history-env")).select_by_value("staging")
    driver.find_element(By.ID, "history-apply").click()
    wait(driver, lambda d: "env=staging" in d.current_url)
    text_of(driver, "history-rows", "staging load test")
    assert "first release" not in driver.find_element(By.ID, "history-rows").text
    shot(driver, "history")


def test_a_hostile_value_is_shown_as_text(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/entity/service.xss")
    cell = wait(driver, ec.presence_of_element_located(
        (By.CSS_SELECTOR, "tr[data-field='image'] td.value[data-env='production']")))
    text_of(driver, "entity-values", XSS)
    assert cell.text == XSS
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    go(driver, url, "#/history/service.xss")
    text_of(driver, "history-rows", XSS)
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    alerts = [e for e in driver.get_log("browser") if "alert" in e.get("message", "")]
    assert alerts == []


def test_resolve_a_conflict_as_the_signed_in_actor(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/conflicts")
    box = wait(driver, ec.presence_of_element_located(
        (By.CSS_SELECTOR, ".conflict[data-entity='service.shop'][data-field='tier']")))
    assert "batch is cheaper" in box.text and "human:ana" in box.text
    shot(driver, "conflicts")
    choice = next(c for c in box.find_elements(By.CSS_SELECTOR, ".candidate")
                  if c.find_element(By.CSS_SELECTOR, "code").text == "web")
    choice.find_element(By.CSS_SELECTOR, "button.choose").click()
    text_of(driver, "flash", "Resolved service.shop.tier")
    text_of(driver, "conflict-list", "No open conflict")
    log = requests.get(f"{url}/v1/history/service.shop", params={"field": "tier", "limit": 1},
                       headers=key("zara"), timeout=10).json()["operations"]
    assert (log[0]["type"], log[0]["actor"], log[0]["actor_class"], log[0]["value"]) == (
        "resolve", "zara", "human", "web")


def test_preview_and_run_a_promote(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/envs")
    Select(driver.find_element(By.ID, "diff-from")).select_by_value("staging")
    Select(driver.find_element(By.ID, "diff-to")).select_by_value("production")
    driver.find_element(By.ID, "diff-run").click()
    text_of(driver, "diff-rows", "replicas")
    driver.find_element(By.ID, "promote-entities").send_keys("service.shop")
    driver.find_element(By.ID, "promote-fields").send_keys("replicas")
    driver.find_element(By.ID, "promote-preview").click()
    assert "service.shop.replicas: 1 → 4" in text_of(driver, "promote-changes", "replicas")
    shot(driver, "environments")
    before = requests.get(f"{url}/v1/entities/service.shop", headers=key("zara"),
                          timeout=10).json()["fields"]["replicas"]["value"]
    assert before == 1  # a preview writes nothing
    driver.find_element(By.ID, "promote-confirm").click()
    text_of(driver, "flash", "Promoted staging → production")
    after = requests.get(f"{url}/v1/entities/service.shop", headers=key("zara"),
                         timeout=10).json()["fields"]
    assert after["replicas"]["value"] == 4 and after["image"]["value"] == "shop:1"


def test_a_milestone_its_diff_and_a_rollback(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/milestones")
    driver.find_element(By.ID, "ms-title").send_keys("from the console")
    driver.find_element(By.ID, "ms-create").click()
    text_of(driver, "flash", "Milestone 1 created")
    text_of(driver, "milestone-rows", "from the console")
    # a change after it, then the diff and the rollback, from the page
    requests.post(f"{url}/v1/ops", json={"type": "set_field", "entity_id": "service.shop",
                                         "field": "image", "value": "shop:2"},
                  headers=key("zara"), timeout=10).raise_for_status()
    go(driver, url, "#/milestones?id=1")
    text_of(driver, "milestone-message", "Operations")
    driver.find_element(By.ID, "ms-diff-run").click()
    text_of(driver, "ms-diff-rows", "shop:2")
    shot(driver, "milestones")
    driver.find_element(By.ID, "rb-entities").send_keys("service.shop")
    driver.find_element(By.ID, "rb-preview").click()
    assert "service.shop.image: shop:2 → shop:1 (set_field)" in text_of(
        driver, "rb-changes", "shop:1")
    driver.find_element(By.ID, "rb-confirm").click()
    text_of(driver, "flash", "Rolled production back to milestone 1")
    r = requests.get(f"{url}/v1/history/service.shop", params={"field": "image", "limit": 1},
                     headers=key("zara"), timeout=10).json()["operations"][0]
    assert (r["value"], r["intent"], r["actor"]) == ("shop:1", "rollback to milestone 1",
                                                     "zara")


def test_another_clients_write_appears_in_the_live_log_within_a_second(site):
    url, driver = site
    sign_in(driver, url)
    go(driver, url, "#/live")
    text_of(driver, "live-state", "following")
    # the stream is counted in the project's status, whichever worker serves it
    watchers = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
        "watchers"]
    assert watchers["open"] >= 1 and watchers["processes"] >= 1
    requests.post(f"{url}/v1/ops", json={"type": "set_field", "entity_id": "route.live",
                                         "field": "weight", "value": 42, "intent": "live!"},
                  headers=key("autoscaler-7"), timeout=10).raise_for_status()
    started = time.monotonic()
    text_of(driver, "live-list", "live!", timeout=5)
    assert time.monotonic() - started < 1.0
    assert "autoscaler:autoscaler-7" in driver.find_element(By.ID, "live-list").text
    # paused: new operations wait, and come when resumed
    driver.find_element(By.ID, "live-pause").click()
    requests.post(f"{url}/v1/ops", json={"type": "set_field", "entity_id": "route.live",
                                         "field": "weight", "value": 43, "intent": "held"},
                  headers=key("autoscaler-7"), timeout=10).raise_for_status()
    text_of(driver, "live-pause", "1 waiting")
    assert "held" not in driver.find_element(By.ID, "live-list").text
    shot(driver, "live")
    driver.find_element(By.ID, "live-pause").click()
    text_of(driver, "live-list", "held")


def test_a_denied_action_says_so_and_writes_nothing(site):
    url, driver = site
    requests.post(f"{url}/v1/ops", json={"type": "set_field", "entity_id": "service.shop",
                                         "field": "image", "value": "shop:3", "env": "staging"},
                  headers=key("zara"), timeout=10).raise_for_status()  # something to promote
    sign_in(driver, url, actor="reader-1")  # a reader: may read, may not write
    go(driver, url, "#/milestones")
    before = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
        "operations"]
    wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "#rb-milestone option")))
    driver.find_element(By.ID, "rb-preview").click()
    message = text_of(driver, "flash", "may not")
    assert "reader-1" in message
    assert driver.find_elements(By.ID, "rb-confirm") == []
    go(driver, url, "#/envs")
    wait(driver, ec.presence_of_element_located((By.ID, "promote-preview"))).click()
    wait(driver, ec.presence_of_element_located((By.ID, "promote-confirm"))).click()
    assert "may not promote" in text_of(driver, "flash", "may not")
    shot(driver, "denied")
    assert requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
        "operations"] == before


def test_the_pages_fit_a_phone(site):
    url, driver = site
    sign_in(driver, url)
    driver.set_window_size(390, 844)
    try:
        for hash_, ready in (("#/overview", "ops-total"), ("#/state", "state-rows"),
                             ("#/entity/service.shop", "entity-values")):
            go(driver, url, hash_)
            wait(driver, ec.presence_of_element_located((By.ID, ready)))
            time.sleep(0.3)
            width = driver.execute_script("return document.documentElement.clientWidth")
            body = driver.execute_script("return document.body.scrollWidth")
            assert body <= width + 1, (hash_, body, width)  # nothing runs off the side
            assert driver.find_element(By.ID, "nav-state").is_displayed()
        shot(driver, "phone")
    finally:
        driver.set_window_size(1280, 1000)


def test_entity_pages_filter_and_page_on_the_server(engine):
    ops = [{"type": "set_field", "entity_id": f"service.a{i:03d}", "field": "image",
            "value": "x"} for i in range(250)]
    ops += [{"type": "set_field", "entity_id": f"route.a{i:03d}", "field": "path",
             "value": "/"} for i in range(5)]
    engine.apply(ops, ZARA)
    first = engine.entity_page(limit=100)
    assert first["matched"] == 255 and len(first["entities"]) == 100
    assert first["entities"][0] == "route.a000" and first["next"] == 100
    last = engine.entity_page(offset=200, limit=100)
    assert len(last["entities"]) == 55 and last["next"] is None
    assert engine.entity_page(types=["route"])["entities"] == [f"route.a{i:03d}"
                                                               for i in range(5)]
    found = engine.entity_page(match="A01", types=["service"])  # any case
    assert found["entities"] == [f"service.a{i:03d}" for i in range(10, 20)]
    assert engine.entity_page(match="a\nb")["entities"] == []
    # a new entity appears, a deleted one is not listed (but still counted as matching)
    engine.apply([{"type": "set_field", "entity_id": "service.zz", "field": "image",
                   "value": "x"}, {"type": "delete_entity", "entity_id": "service.a000"}],
                 ZARA)
    page = engine.entity_page(types=["service"], limit=1000)
    assert "service.zz" in page["entities"] and "service.a000" not in page["entities"]
    assert engine.entity_page(match="zz")["entities"] == ["service.zz"]
    with pytest.raises(Exception, match="unknown entity type"):
        engine.entity_page(types=["nope"])


def test_a_write_without_a_content_type_is_refused(site):
    """What a page on another origin can send without a preflight, a signed-in browser's
    client certificate with it: refused, nothing written."""
    url, _ = site
    before = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
        "operations"]
    body = b'{"type": "set_field", "entity_id": "service.csrf", "field": "image", "value": "x"}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {**key("zara"), **({"Content-Type": content_type} if content_type else {})}
        r = requests.post(f"{url}/v1/ops", data=body, headers=headers, timeout=10)
        assert r.status_code == 415, (content_type, r.text)
    assert requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
        "operations"] == before


def test_watcher_counts_survive_what_is_left_in_their_folder(tmp_path):
    from conflux.status import publish_watchers, watcher_counts, WATCHERS_DIR

    publish_watchers(str(tmp_path), 3)
    folder = tmp_path / WATCHERS_DIR
    assert watcher_counts(str(tmp_path)) == {"open": 3, "processes": 1}
    dead = _a_dead_pid()
    for name, text in (("²", "5"), ("99999999999999999999", "5"), (str(dead), "7 1"),
                       (f"{dead}.tmp", "7"), ("1", "-1000"), ("notes", "1"),
                       (str(os.getpid()) + ".tmp", "9")):
        (folder / name).write_text(text)
    assert watcher_counts(str(tmp_path)) == {"open": 3, "processes": 1}
    assert not (folder / str(dead)).exists() and not (folder / f"{dead}.tmp").exists()
    # a pid now held by another process than the one that wrote it: stale, removed
    (folder / "1").write_text("4 1\n")
    assert watcher_counts(str(tmp_path)) == {"open": 3, "processes": 1}
    publish_watchers(str(tmp_path), 0)  # its streams closed: no longer counted
    assert watcher_counts(str(tmp_path))["processes"] == 0


def _a_dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid

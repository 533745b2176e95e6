"""``serve``: the HTTP API against a live server on 127.0.0.1, and the page in a real browser.

Needs torch, transformers, starlette, uvicorn and httpx (skipped otherwise); the browser
test also needs selenium and a system Chromium with chromedriver (skipped where absent).
One tiny run is trained for the module (a few seconds on CPU).
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import helpers as h  # noqa: E402

from varemi.music.demo import write_demo_corpus  # noqa: E402
from varemi.training import finetune as ft  # noqa: E402
from varemi.training.serve import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    write_demo_corpus(root / "midi")
    h.build(root / "midi", root / "data", window_size=64, stride=48, min_window_tokens=16,
            bos=True)  # fmt: skip
    ft.finetune(
        ft.FinetuneParams(data=root / "data", out=root / "run", model="tiny", max_steps=10,
                          eval_steps=10, lr=1e-2, warmup=2, patience=0, device="cpu",
                          quiet=True, max_eval_examples=16)
    )  # fmt: skip
    return root / "run"


class LiveServer:
    """uvicorn serving an app in a thread on 127.0.0.1."""

    def __init__(self, app):
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(run):
    app = create_app(run, queue=1, max_bars=8, device="cpu")
    with LiveServer(app) as url:
        yield url, app


def test_generate_returns_midi_with_what_was_used(server):
    from symusic import Score

    url, _ = server
    r = httpx.post(f"{url}/generate", json={"valence": 0.95, "arousal": -0.95, "bars": 2,
                                            "seed": 7, "top_k": 20}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/midi"
    assert r.headers["x-varemi-valence-bin"] == "4" and r.headers["x-varemi-arousal-bin"] == "-4"
    assert r.headers["x-varemi-seed"] == "7" and r.headers["x-varemi-bars"] == "2"
    assert int(r.headers["x-varemi-new-tokens"]) > 0
    assert float(r.headers["x-varemi-generation-seconds"]) > 0
    assert r.content[:4] == b"MThd"
    assert Score.from_midi(r.content).note_num() == int(r.headers["x-varemi-notes"])
    again = httpx.post(f"{url}/generate", json={"valence_bin": 4, "arousal_bin": -4, "bars": 2,
                                                "seed": 7, "top_k": 20}, timeout=60)  # fmt: skip
    assert again.content == r.content  # same bins, same seed: the same piece
    tokens = httpx.post(f"{url}/generate", json={"valence_bin": 0, "arousal_bin": 0,
                                                 "max_new_tokens": 16}, timeout=60)  # fmt: skip
    assert tokens.status_code == 200 and int(tokens.headers["x-varemi-new-tokens"]) <= 16
    assert int(tokens.headers["x-varemi-seed"]) >= 0  # a random seed, stated


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ({"valence": 2, "arousal": 0}, "valence"),
        ({"valence": 0.1}, "arousal"),
        ({"valence_bin": 9, "arousal_bin": 0}, "valence_bin"),
        ({"valence": 0, "arousal": 0, "valence_bin": 0}, "valence_bin"),
        ({"valence": 0, "arousal": 0, "bars": 99}, "bars"),
        ({"valence": 0, "arousal": 0, "temperature": 0}, "temperature"),
        ({"valence": 0, "arousal": 0, "guidance": -1}, "guidance"),
        ({"valence": 0, "arousal": 0, "colour": "blue"}, "colour"),
        ({"valence": "high", "arousal": 0}, "valence"),
    ],
)
def test_bad_requests_get_422_naming_the_field(server, body, field):
    url, _ = server
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{url}/generate", timeout=30, **kw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_health_and_page(server):
    url, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["bins"] == [-4, 4]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and 'id="pad"' in page.text
    assert "<script src=" not in page.text  # nothing from the network


def test_requests_beyond_the_bound_get_503_never_a_crash(server):
    url, app = server
    body = {"valence_bin": 0, "arousal_bin": 0, "max_new_tokens": 60, "top_k": 0}

    def post(_):
        return httpx.post(f"{url}/generate", json=body, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(8)))
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    assert httpx.get(f"{url}/health").json()["pending"] == 0
    assert httpx.post(f"{url}/generate", json=body, timeout=120).status_code == 200


def test_serve_refuses_bad_options_in_one_line(run, tmp_path):
    result = h.run_cli("serve", run, "--port", "70000")
    assert result.returncode == 2 and h.error_lines(result.stderr) == [
        "error: --port must be in 0..65535, got 70000"
    ]
    result = h.run_cli("serve", tmp_path)
    assert result.returncode == 2 and "is not a varemi finetune output" in result.stderr


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="no system Chromium with chromedriver")  # fmt: skip
def test_the_page_generates_and_shows_a_piece_in_a_real_browser(server):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(f"{url}/")
        pad = driver.find_element(By.ID, "pad")
        webdriver.ActionChains(driver).move_to_element_with_offset(pad, 100, -100).click().perform()
        assert float(driver.find_element(By.ID, "valence").text) > 0.5
        assert float(driver.find_element(By.ID, "arousal").text) > 0.5
        driver.find_element(By.ID, "seed").send_keys("3")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 90).until(
            lambda d: (
                "notes in" in d.find_element(By.ID, "status").text
                or "error" in d.find_element(By.ID, "status").text
            )
        )
        status = driver.find_element(By.ID, "status").text
        assert re.search(r"bins valence [34], arousal [34]; seed 3; \d+ new tokens", status), status
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
        assert driver.find_element(By.ID, "play").is_enabled()
        driver.find_element(By.ID, "play").click()  # Web Audio: no error thrown
        assert driver.find_element(By.ID, "roll").get_attribute("data-notes").isdigit()
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert logs == [], logs
    finally:
        driver.quit()

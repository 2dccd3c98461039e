"""``sparseformer generate``: streams tokens and reports tokens/s and RSS."""

import argparse

from sparseformer.cli.edge import add_parser_generate


def parse(*argv):
    ap = argparse.ArgumentParser()
    add_parser_generate(ap.add_subparsers())
    return ap.parse_args(["generate", *argv])


def test_generate_reports_progress(capsys):
    args = parse(
        "--tokens",
        "30",
        "--report-every",
        "10",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--window",
        "8",
        "--sinks",
        "2",
        "--show-text",
    )
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert len(out.encode("latin-1", errors="ignore")) <= 30 * 4
    lines = [line for line in err.splitlines() if line.startswith("tokens")]
    assert len(lines) == 3 and "tok/s" in lines[0] and "rss" in lines[0] and "MiB" in lines[0]


def test_generate_rejects_bad_counts(capsys):
    args = parse("--tokens", "0")
    assert args.func(args) == 2
    assert "--tokens must be >= 1" in capsys.readouterr().err

"""optlib.book.performance: the step-time table shared by benchmarks/step_time.py and the
performance appendix, the least traffic per optimizer, the traffic counter and the timers."""

import pytest
import torch

import optlib
from optlib.book import performance as perf


def test_step_time_table_rows(monkeypatch):
    monkeypatch.setattr(perf, "SHAPES", {"3 x 10": (3, 10)})
    rows = perf.step_time_table(reps=2, block=1)
    impls = {(r["optimizer"], r["impl"]) for r in rows}
    for name in ("SGD momentum", "Adam", "AdamW"):
        for impl in ("torch for-loop", "torch foreach", "torch fused", "optlib"):
            assert (name, impl) in impls
    for r in rows:
        assert r["ms"] > 0 and r["first_s"] > 0
        if r["impl"] == "torch foreach":
            assert r["ratio"] == 1.0
    text = perf.format_step_time_table(rows)
    assert text.splitlines()[-1].startswith("worst optlib / torch foreach:")
    assert text.count("optlib ") >= 3


def test_time_interleaved_shuffles_rounds_and_blocks():
    def record(seed):
        calls = []
        perf.time_interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"},
                              reps=12, block=3, seed=seed)
        return calls

    calls = record(seed=0)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]        # two warm-up calls each
    rounds = [calls[6 + 9 * r: 15 + 9 * r] for r in range(12)]
    assert len(calls) == 6 + 12 * 9
    for block in rounds:                # each round: every function once, 3 calls in a row
        order = block[::3]
        assert sorted(order) == ["a", "b", "c"] and block == [k for k in order for _ in range(3)]
    # the order changes from round to round, so no function always follows the same one
    blocks = [k for r in rounds for k in r[::3]]
    for k in "abc":
        assert len({before for before, this in zip(blocks, blocks[1:], strict=False) if this == k}) >= 2
    assert record(seed=0) == calls and record(seed=1) != calls   # seeded: reproducible


REPORT = """# optlib against its peers: optimizer step time

- Date: 2026-01-02 03:04 UTC
- Machine: Test CPU, 2 logical CPUs

## Summary

| optimizer | shapes | ratio |
|---|---|---|
| Lion | 200x100x50 | 1.33 [1.29–1.38] |

## Where optlib is slower, and why

- **Lion**: three passes.

## All timings

| optimizer | implementation | ms |
|---|---|---|
| Lion | optlib | 2.0 |
"""


def test_recorded_reports_and_their_summary(tmp_path):
    assert perf.recorded_reports(root=tmp_path / "absent") == []
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("peers-2026-01-02.md", "peers-2025-12-31.md", "other.md"):
        (tmp_path / "benchmarks" / "results" / name).write_text(REPORT)
    reports = perf.recorded_reports(root=tmp_path)
    assert [p.name for p in reports] == ["peers-2025-12-31.md", "peers-2026-01-02.md"]
    assert perf.recorded_reports("gpu-check-", "notes", root=tmp_path) == []
    text = perf.summarize_report(reports[-1])
    assert text.splitlines()[:3] == ["# optlib against its peers: optimizer step time", "",
                                     "- Date: 2026-01-02 03:04 UTC"]
    assert "optimizer  shapes      ratio" in text                # aligned, separator dropped
    assert "Lion       200x100x50  1.33 [1.29–1.38]" in text
    assert "**Lion**: three passes." in text
    assert "All timings" not in text and "| Lion | optlib |" not in text
    raw = perf.summarize_report(reports[-1], sections=("All timings",), align=False)
    assert "| Lion | optlib | 2.0 |" in raw and "## Summary" not in raw
    committed = perf.recorded_reports() + perf.recorded_reports("gpu-check-", "notes")
    for path in committed:                                        # the committed ones read
        assert perf.summarize_report(path).startswith("# optlib ")
        narrow = perf.summarize_report(path, width=88)            # ... and fit the page
        assert max(len(line) for line in narrow.splitlines()) <= 88, path.name


def test_recorded_reports_newest_last(tmp_path):
    """The newest report is the last, whatever the names sort like: a second report of a
    day (a suffix after the date) comes after the day's first, and a file with no date
    after the prefix is not a report."""
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    names = ["peers-2026-11-27-1130.md", "peers-2026-11-27.md", "peers-2026-11-26.md",
             "peers-notes.md", "peers-2026-11-28.json"]
    for name in names:
        (folder / name).write_text(REPORT)
    assert [p.name for p in perf.recorded_reports(root=tmp_path)] == [
        "peers-2026-11-26.md", "peers-2026-11-27.md", "peers-2026-11-27-1130.md"]
    (folder / "peers-2026-12-01.md").write_text(REPORT)
    assert perf.recorded_reports(root=tmp_path)[-1].name == "peers-2026-12-01.md"


def test_is_partial(tmp_path):
    full, partial = tmp_path / "peers-2026-01-02.md", tmp_path / "peers-2026-01-02-eager.md"
    full.write_text(REPORT + "\n- PARTIAL in a later section does not count\n")
    partial.write_text(REPORT.replace("- Machine:", "- PARTIAL: the eager rows only\n- Machine:"))
    assert not perf.is_partial(full) and perf.is_partial(partial)


def test_plot_step_times():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [10, 100, 1000]
    times = {"foreach": [1e-3, 2e-3, 2e-2], "fused": [5e-4, 1e-3, 1e-2]}
    ax = perf.plot_step_times(xs, times, "parameters", bound=[1e-5, 1e-4, 1e-3],
                              bound_label="roofline")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["foreach", "fused", "roofline"]
    assert list(lines["fused"].get_ydata()) == pytest.approx([0.5, 1.0, 10.0])   # in ms
    assert list(lines["roofline"].get_xdata()) == xs
    assert lines["roofline"].get_linestyle() == "--" and lines["foreach"].get_marker() == "o"
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("parameters", "ms per Adam step")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    plt.close(ax.figure)
    ax = perf.plot_step_times([1, 8], {"for-loop": [1e-3, 2e-3]}, "tensors")
    assert [line.get_label() for line in ax.get_lines()] == ["for-loop"]         # no bound
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="2 times for 3 xs"):
        perf.plot_step_times(xs, {"fused": [1e-3, 2e-3]}, "parameters")


LONG = "\n".join([
    "# optlib against its peers: optimizer step time",
    "",
    "- Date: 2026-01-02 03:04 UTC",
    "- Peers: bitsandbytes 0.50.2, lion-pytorch 0.2.5, schedulefree 1.4.1, sophia-opt 0.2.2, "
    "pytorch-optimizer 4.1.0",
    "  and more",
    "",
    "## Summary",
    "",
    "| optimizer | shapes | optlib | ms | fastest peer | ms | optlib / peer | |",
    "|---|---|---|---|---|---|---|---|",
    "| AdamWScheduleFree | 20x1000x500 | optlib | 103 | pytorch-optimizer for-loop | 62.7 | "
    "1.64 [1.60–1.69] | slower |",
    "| AdamWScheduleFree | 20x1000x500 | optlib compiled | 15.5 | pytorch-optimizer for-loop "
    "(no compiled peer) | 62.7 | 0.25 [0.24–0.28] | ok |",
    "| Adam8bit | 20x1000x500 | optlib compiled (falls back to eager) | 204 | bitsandbytes "
    "(no compiled peer) | 350 | 0.58 [0.53–0.62] | ok |",
    "",
    "## Where optlib is slower, and why",
    "",
    "- **AdamWScheduleFree** (optlib, 20x1000x500): a reason that is much longer than one "
    "line of the page, so that it must be wrapped.",
    "  - AdamWScheduleFree, optlib, 20x1000x500: 1.64x pytorch-optimizer for-loop. Measured: "
    "the row's own numbers, long enough to be wrapped too.",
    "",
    "```",
    "a code line that is longer than the page is wide, so it is wrapped with an indent, "
    "keeping every word",
    "```",
    "",
])


def test_summarize_report_fits_a_width(tmp_path):
    path = tmp_path / "peers-2026-01-02.md"
    path.write_text(LONG)
    text = perf.summarize_report(path, width=88)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 88
    assert "  pytorch-optimizer 4.1.0 and more" in text                # a bullet, rewrapped
    assert "20 matrices of 1000 x 500, eager (ms per step):" in lines
    assert "20 matrices of 1000 x 500, compiled (ms per step):" in lines
    eager = lines[lines.index("20 matrices of 1000 x 500, eager (ms per step):") + 2]
    assert eager.split() == ["AdamWScheduleFree", "103", "pytorch-opt", "for-loop", "62.7",
                             "1.64", "[1.60–1.69]", "slower"]
    assert any(line.startswith("Adam8bit†") and "bitsandbytes*" in line for line in lines)
    assert "- **AdamWScheduleFree** (optlib, 20x1000x500): a reason that is much longer" in text
    assert "  - AdamWScheduleFree, optlib, 20x1000x500: 1.64x pytorch-optimizer" in text
    assert "\n    the row's own numbers" in text or "\n    numbers" in text   # nested indent
    code = text[text.index("```\na code line"):]
    assert " ".join(code.split()).startswith("``` a code line that is longer than the page is "
                                             "wide, so it is wrapped with an indent, keeping "
                                             "every word ```")
    assert "Measured:" not in perf.summarize_report(path, width=88, details=False)
    assert perf.summarize_report(path).count("pytorch-optimizer for-loop") == 3   # unchanged


def test_summarize_report_wraps_a_wide_header(tmp_path):
    """A table too wide for the page keeps its rows and wraps its header cells instead."""
    path = tmp_path / "step-time-compiled-2026-01-02.md"
    path.write_text("\n".join([
        "# optlib.compile on a quiet machine", "", "## Summary", "",
        "| shape | optimizer | first step, warm cache | first step, cold cache | "
        "compiled / torch fused |",
        "|---|---|---|---|---|",
        "| 200 x 5k | Adam | 13.5 s | 20.9 s | 1.12, 1.13 |",
        "| 20 x 500k | AdamW | 5.8 s | 5.7 s | 1.05, 1.01 |", ""]))
    lines = perf.summarize_report(path, sections=("Summary",), width=70).splitlines()
    assert max(len(line) for line in lines) <= 70
    i = lines.index("## Summary") + 2
    assert lines[i:i + 2] == ["shape      optimizer  first step,  first step,  compiled / torch",
                              "                      warm cache   cold cache   fused"]
    assert lines[i + 2].split() == ["200", "x", "5k", "Adam", "13.5", "s", "20.9", "s",
                                    "1.12,", "1.13"]
    assert lines[i + 3].split()[:3] == ["20", "x", "500k"]
    wide = perf.summarize_report(path, sections=("Summary",), width=120).splitlines()
    assert any("first step, warm cache" in line for line in wide)     # fits: one header row


def test_traffic_table():
    assert perf.TRAFFIC["SGD"].bytes_per_param() == 12
    assert perf.TRAFFIC["Adam"].bytes_per_param() == 28
    assert perf.TRAFFIC["Adam"].bytes_per_param(element_size=2) == 14


@pytest.mark.parametrize("make, arrays", [
    (lambda p: optlib.SGD(p, lr=0.1), 3),                           # θ += -η g: one pass
    (lambda p: torch.optim.Adam(p, fused=True), 8),                 # one pass (g declared written)
    (lambda p: torch.optim.Adam(p, foreach=True), 19),              # one pass per operation
])
def test_count_traffic(make, arrays):
    params = perf.make_params(3, 1000)
    opt = make(params)
    opt.step()
    t = perf.count_traffic(opt.step)
    assert (t["read"] + t["written"]) / (3000 * 4) == pytest.approx(arrays, abs=0.01)
    assert t["ops"] >= 1


def test_timing_helpers():
    calls = []
    times = perf.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                  reps=3)
    assert set(times) == {"a", "b"} and calls.count("a") == 5     # 2 warm-up calls + 3
    times, bandwidth = perf.time_with_bandwidth({"noop": lambda: None}, reps=2, megabytes=4)
    assert set(times) == {"noop"} and bandwidth > 0
    with pytest.raises(ValueError, match="stream"):
        perf.time_with_bandwidth({"stream": lambda: None})
    with pytest.raises(ValueError, match="count"):
        perf.make_params(0, 10)
    with pytest.raises(ValueError, match="keep"):
        perf.time_interleaved({"a": lambda: None}, keep="mean")


def _slow_but_once(fast_call: int, pause: float = 0.03):
    """A function that sleeps ``pause`` on every call but the ``fast_call``-th (from 0)."""
    import time

    calls = []

    def fn():
        if len(calls) != fast_call:
            time.sleep(pause)
        calls.append(None)
    return fn


def test_time_with_bandwidth_keeps_the_fastest_round(monkeypatch):
    """A step disturbed in all rounds but one: time_interleaved's median is a disturbed
    round, time_with_bandwidth's time (and bandwidth) the undisturbed one, so that the
    step and the probe are both read at their least disturbed moments."""
    # calls 0 and 1 are the warm-up; of the three timed rounds, only the last is fast
    median = perf.time_interleaved({"step": _slow_but_once(4)}, reps=3)["step"]
    fastest = perf.time_interleaved({"step": _slow_but_once(4)}, reps=3, keep="min")["step"]
    times, bandwidth = perf.time_with_bandwidth({"step": _slow_but_once(4)}, reps=3,
                                                megabytes=4)
    assert median >= 0.03 > 0.01 > fastest and times["step"] < 0.01 and bandwidth > 0
    # the probe is a contestant of the same call: its rate is from its fastest round too
    seen = []
    timer = perf.time_interleaved
    monkeypatch.setattr(perf, "time_interleaved",
                        lambda steps, **kw: seen.append((sorted(steps), kw)) or timer(steps, **kw))
    perf.time_with_bandwidth({"step": lambda: None}, reps=2, megabytes=4)
    assert seen == [(["step", "stream"], dict(reps=2, device="cpu", keep="min"))]

"""The step-time table shared by benchmarks/step_time.py and the performance appendix."""

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


def test_time_interleaved_rotates_and_blocks():
    calls = []
    perf.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          reps=2, block=3)
    # two warm-up calls each, then round 1 (a first) and round 2 (b first), 3 calls per block
    assert calls == ["a", "a", "b", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3

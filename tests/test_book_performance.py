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

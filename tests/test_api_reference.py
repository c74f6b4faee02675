"""The API reference (api.md) lists what ``optlib.__all__`` exports, without editing api.md.

``_ext/optlib_api.py`` fills api.md's ``{optlib-api} SECTION`` directives from
``optlib.__all__``; the book build (``make book-strict``) fails if a name is documented
nowhere. These tests check the classification without building the book.
"""

from __future__ import annotations

import inspect

import repository
import torch

import optlib

ROOT = repository.ROOT
api = repository.load("_ext/optlib_api.py", "optlib_api")


def test_every_exported_name_is_in_one_section_or_an_automodule():
    listed = [n for section in api.SECTIONS for n in api.entries(section)]
    assert len(listed) == len(set(listed)), "a name in two sections"
    modules = [n for n in optlib.__all__ if inspect.ismodule(getattr(optlib, n))]
    assert sorted(listed + modules) == sorted(optlib.__all__)
    text = (ROOT / "api.md").read_text(encoding="utf-8")
    for section in api.SECTIONS:
        assert f"```{{optlib-api}} {section}\n```" in text, f"api.md lacks the {section} section"
    for module in modules:
        assert f".. automodule:: optlib.{module}" in text, f"api.md lacks optlib.{module}"


def test_sections():
    assert api.entries("torch-family")[:2] == ["SGD", "Adagrad"]
    beyond = api.entries("beyond")
    assert beyond.index("gnb_update_hessian") == beyond.index("SophiaG") + 1
    assert beyond.index("muon_param_groups") == beyond.index("MuonWithAdamW") + 1
    # (the site is built under torch 2.13; a torch before 2.9 has no torch.optim.Muon, and
    # the reference then lists optlib's Muon beyond torch.optim)
    assert "Muon" in api.entries("torch-family" if hasattr(torch.optim, "Muon") else "beyond")
    assert "Lion" in beyond
    assert set(api.entries("machinery")) == set(api.MACHINERY)
    assert "clip_grad_norm_" in api.entries("tools")


def test_a_new_export_appears_without_editing_api_md(monkeypatch):
    class Brand(optlib.Optimizer):
        """A new optimizer."""

    def helper():
        """A new tool."""

    Brand.__module__ = helper.__module__ = "optlib.brand_new"
    monkeypatch.setattr(optlib, "Brand", Brand, raising=False)
    monkeypatch.setattr(optlib, "helper", helper, raising=False)
    monkeypatch.setattr(optlib, "__all__", [*optlib.__all__, "Brand", "helper"])
    assert not hasattr(torch.optim, "Brand")
    assert api.entries("beyond")[-2:] == ["Brand", "helper"]
    assert "helper" not in api.entries("tools")

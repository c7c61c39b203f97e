"""The console view: a tree of module names with totals per module, output shapes, units in every header,
IEC bytes, zero-cost view ops folded away, foreign warnings passed through as theirs, fvcore's differences
on a transformer explained row by row."""

from __future__ import annotations

from pathlib import Path

from energymodel.cli import main
from energymodel.cli.console import ibytes

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models_people_bring.py"


def _table(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("module "))
    end = next(i for i, ln in enumerate(lines) if i > start and not ln.strip())
    return lines[start:end]


def test_tree_with_totals_per_depth_and_shapes(capsys) -> None:
    assert main(["profile", f"{MODELS}:resnet18", "--depth", "2"]) == 0
    table = _table(capsys.readouterr().out)
    head = table[0]
    for unit in ("output (per sample)", "params", "MACs", "SRAM (32-bit words)", "DRAM (32-bit words)", "energy (J)"):
        assert unit in head
    names = [ln.split()[0] for ln in table[1:]]
    indent = {i: len(ln) - len(ln.lstrip()) for i, ln in enumerate(table[1:])}
    i = names.index("layer1")
    layer1, first = table[1 + i].split(), table[2 + i].split()
    # layer1 holds two BasicBlocks of 73,984 parameters and 231.2 M MACs each: its row is their total
    assert layer1[1:7] == ["Sequential", "64×56×56", "148", "k", "462.4", "M"] and indent[i] == 0
    assert first[:2] == ["0", "BasicBlock"] and first[-8:-6] == ["231.2", "M"] and indent[i + 1] == 2
    assert table[1 + names.index("conv1")].split()[2] == "64×112×112"
    assert max(indent.values()) == 2 and "conv2" not in names  # nothing below depth 2


def test_view_ops_folded_unless_asked(capsys) -> None:
    assert main(["profile", f"{MODELS}:patch_transformer"]) == 0
    out = capsys.readouterr().out
    note = next(ln for ln in out.splitlines() if ln.startswith("rows:"))
    folded = int(note.split("; ")[-1].split()[0])
    assert folded > 50 and "(view)" not in out and "(transpose)" not in out
    assert main(["profile", f"{MODELS}:patch_transformer", "--show-views"]) == 0
    shown = _table(capsys.readouterr().out)
    assert len(shown) - 1 >= len(_table(out)) - 1 + folded and any("(transpose)" in ln for ln in shown)


def test_iec_bytes_everywhere(capsys) -> None:
    assert ibytes(2**20) == "1 MiB" and ibytes(1500) == "1.465 KiB" and ibytes(12) == "12 B"
    assert main(["compare", "smallcnn", "--k", "0", "--samples-new", "100", "--samples-old", "100",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "on-chip buffer 1 MiB" in out and "MiB" in out.splitlines()[-1] and " MB" not in out


def test_foreign_warnings_are_theirs_and_ours_are_ours(capsys, tmp_path: Path) -> None:
    path = tmp_path / "noisy.py"
    path.write_text("import warnings\nimport torch\nfrom torch import nn\n\n\nclass Noisy(nn.Module):\n"
                    "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n"
                    "    def forward(self, x):\n        warnings.warn('careful with x', RuntimeWarning)\n"
                    "        return self.fc(x)\n\n\ndef net():\n    return Noisy().half()\n", encoding="utf-8")
    assert main(["profile", f"{path}:net", "--input", "4"]) == 0
    err = capsys.readouterr().err
    assert "noisy.py:12: RuntimeWarning: careful with x" in err
    assert "energymodel: warning: careful" not in err
    assert "energymodel: warning: the model's parameters are fp16" in err  # our own, in our form


def test_fvcore_explains_every_difference_on_a_transformer(capsys) -> None:
    assert main(["profile", f"{MODELS}:vit_tiny", "--check", "fvcore", "--format", "json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["data"]["fvcore_check"]
    total = rows[-1]
    assert total["module"] == "(total)" and total["difference"] != 0
    assert total["reason"] == "the sum of the rows above"
    assert sum(r["difference"] for r in rows[:-1]) == total["difference"]
    differ = [r for r in rows[:-1] if not r["agrees"]]
    assert differ and all(r["reason"] for r in differ)
    attn = [r for r in differ if r["module"].endswith("self_attention.(ops)")]
    # 4 heads x 17 tokens x 17 tokens x 16 dims, twice (q·kᵀ and p·v): what fvcore skips in each layer
    assert len(attn) == 4 and all(r["difference"] == -2 * 4 * 17 * 17 * 16 for r in attn)

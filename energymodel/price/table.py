"""Energy tables are data: TOML files with per-operation and per-access energies, validated on load.

A table file (see ``energymodel/price/tables/45nm.toml``)::

    name = "45nm"                 # required strings: name, description, technology, datatype, source
    voltage = 0.9                 # number >= 0
    word_bits = 32                # integer 1..64: width of one stored word (weights, activations)
    [operations]                  # pJ per operation, each a number or {pj = ..., source = "..."}
    mac = 4.6
    add = 0.9
    mult = 3.7
    cmp = 0.9
    [memory.rf]                   # levels rf, sram, dram: pJ per access of `bits` bits
    pj = 1.0
    bits = 32
    source = "..."
    [dataflow]
    buffer_bytes = 1048576        # on-chip buffer (SRAM) capacity
    rf_accesses_per_op = 3        # register-file accesses per arithmetic operation other than a tiled MAC
    rf_words = 32                 # words of each PE's input, weight and output register file (> 0), or
                                  # rf_words = { input = 12, weight = 224, output = 24 }
    sram_weight = 5               # optional: the mapper's cost of an SRAM word in RF words (default: the
                                  # table's SRAM / RF energy per word)
    tiling = true                 # conv/linear layers by the tiled dataflow (false: the per-tensor size rule)
    tiles = "any"                 # tile sizes: "any" (a last, partial tile allowed) or "divisors" (each tile
                                  # divides its dimension: perfect factorization, as ZigZag's and Timeloop's mappers)
    reuse = "ideal"               # "ideal" (each word once per phase) or "none" (every MAC operand fetched)
    [dataflow.array]              # the PE array of the tiled dataflow
    rows = 16                     # integers >= 1
    cols = 16
    unroll = ["K", "C"]           # what the rows and the columns unroll: the layer's output (K) and input (C)
                                  # channels, or ["C", "K"]

The energy of one access to a word of ``word_bits`` bits at a level is ``pj * word_bits / bits`` (linear
in access width). A missing, unknown, negative, NaN, infinite, too large (> 1e15) or mistyped entry is refused with a
:class:`~energymodel.errors.TableError` naming the entry.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from energymodel.errors import TableError, one_line
from energymodel.memory.loopnest import Array

__all__ = [
    "Entry", "MemoryLevel", "Dataflow", "EnergyTable", "load_table", "builtin_tables", "OPERATIONS", "LEVELS",
    "SWEEP_KEYS", "resolve_key", "read_toml", "MAX_TABLE_BYTES", "MAX_VALUE",
]

OPERATIONS = ("mac", "add", "mult", "cmp")
LEVELS = ("rf", "sram", "dram")
REUSE = ("ideal", "none")
#: tile sizes of the SRAM tiling (``dataflow.tiles``)
TILES = ("any", "divisors")
#: the register files of a PE, in the order of ``Dataflow.rf_per_operand``
RF_OPERANDS = ("input", "weight", "output")
_TOP_STR = ("name", "description", "technology", "datatype", "source")


@dataclass(frozen=True)
class Entry:
    """Energy of one arithmetic operation, with where the figure comes from."""

    pj: float
    source: str = ""


@dataclass(frozen=True)
class MemoryLevel:
    """Energy of one access of ``bits`` bits at a memory level."""

    pj: float
    bits: int
    source: str = ""

    def per_word(self, word_bits: int) -> float:
        """pJ for one access to a ``word_bits``-bit word: ``pj * word_bits / bits``."""
        return self.pj * word_bits / self.bits


@dataclass(frozen=True)
class Dataflow:
    """The dataflow assumptions that decide which level serves an access (see ``docs/cost-model.md``)."""

    buffer_bytes: int = 1 << 20
    rf_accesses_per_op: float = 3.0
    reuse: str = "ideal"
    #: words of each PE's input, weight and output register file (:mod:`energymodel.memory.loopnest`)
    rf_per_operand: tuple[float, float, float] = (32.0, 32.0, 32.0)
    #: price conv/linear layers by the tiled dataflow (:mod:`energymodel.memory.tiling`)
    tiling: bool = True
    #: the PE array: rows x cols, and what the rows and the columns unroll (``("K", "C")`` or ``("C", "K")``)
    array_rows: int = 16
    array_cols: int = 16
    unroll: tuple[str, str] = ("K", "C")
    #: the mapper's cost of one SRAM word in RF words: ``dataflow.sram_weight``, or the table's SRAM / RF energy per
    #: word when it is loaded (a sweep of energies keeps it: it re-prices the same mapping)
    sram_weight: float = 5.0
    #: tile sizes of the SRAM tiling: ``"any"`` (a last, partial tile allowed) or ``"divisors"`` (perfect
    #: factorization: every tile divides its dimension)
    tiles: str = "any"

    @property
    def rf_words(self) -> float:
        """The smallest register file: MACs outside the tiled layers make ``a·(1 + 1/√rf_words)`` RF accesses
        (:func:`energymodel.memory.tiling.rf_per_mac`)."""
        return float(min(self.rf_per_operand))

    def array(self) -> Array:
        """The PE array and its register files, for :mod:`energymodel.memory.loopnest`."""
        return Array(self.array_rows, self.array_cols, self.unroll, self.rf_per_operand, self.sram_weight, self.tiles)


@dataclass(frozen=True)
class EnergyTable:
    """A validated energy table."""

    name: str
    description: str
    technology: str
    voltage: float
    datatype: str
    word_bits: int
    source: str
    operations: dict[str, Entry]
    memory: dict[str, MemoryLevel]
    dataflow: Dataflow = field(default_factory=Dataflow)
    path: str | None = None

    @property
    def word_bytes(self) -> float:
        return self.word_bits / 8

    def op_pj(self, op: str) -> float:
        return self.operations[op].pj

    def level_pj(self, level: str) -> float:
        """pJ per access of one word (``word_bits``) at ``level``."""
        return self.memory[level].per_word(self.word_bits)

    def get(self, key: str) -> float:
        """The numeric value of a sweep key such as ``memory.dram`` or ``dataflow.buffer_bytes``."""
        key = resolve_key(key)
        section, _, name = key.partition(".")
        if section == "operations":
            return self.operations[name].pj
        if section == "memory":
            return self.memory[name].pj
        if section == "dataflow":
            return float(getattr(self.dataflow, name))
        return float(getattr(self, key))

    def with_values(self, values: dict[str, float]) -> EnergyTable:
        """A copy with some numeric entries replaced (keys as for :meth:`get`), validated."""
        ops = dict(self.operations)
        mem = dict(self.memory)
        flow = self.dataflow
        top: dict[str, Any] = {}
        for raw, value in values.items():
            key = resolve_key(raw)
            section, _, name = key.partition(".")
            label = f"{self.name}: {key}"
            if section == "operations":
                ops[name] = Entry(_number(value, label), ops[name].source + " (varied)")
            elif section == "memory":
                mem[name] = dataclasses.replace(mem[name], pj=_number(value, label))
            elif section == "dataflow":
                if name == "buffer_bytes":
                    flow = dataclasses.replace(flow, buffer_bytes=int(_number(value, label)))
                elif name == "rf_words":
                    v = _positive(value, label)
                    flow = dataclasses.replace(flow, rf_per_operand=(v, v, v))
                else:
                    flow = dataclasses.replace(flow, rf_accesses_per_op=_number(value, label))
            else:
                bits = _number(value, label)
                if bits != int(bits) or not 1 <= bits <= 64:
                    raise TableError(f"{label} must be an integer 1..64, got {value!r}")
                top["word_bits"] = int(bits)
        return dataclasses.replace(self, operations=ops, memory=mem, dataflow=flow, **top)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for reports and run directories)."""
        return {
            "name": self.name,
            "description": self.description,
            "technology": self.technology,
            "voltage": self.voltage,
            "datatype": self.datatype,
            "word_bits": self.word_bits,
            "source": self.source,
            "operations": {k: {"pj": v.pj, "source": v.source} for k, v in self.operations.items()},
            "memory": {k: {"pj": v.pj, "bits": v.bits, "source": v.source} for k, v in self.memory.items()},
            "dataflow": {**dataclasses.asdict(self.dataflow), "rf_words": self.dataflow.rf_words},
            "path": self.path,
        }


#: sweepable numeric entries: full key -> short aliases
SWEEP_KEYS: dict[str, tuple[str, ...]] = {
    **{f"operations.{op}": (op,) for op in OPERATIONS},
    **{f"memory.{lvl}": (lvl,) for lvl in LEVELS},
    "dataflow.buffer_bytes": ("buffer_bytes", "buffer"),
    "dataflow.rf_accesses_per_op": ("rf_accesses_per_op",),
    "dataflow.rf_words": ("rf_words",),
    "word_bits": ("bits",),
}


def resolve_key(key: str) -> str:
    """Map a sweep key or alias (``dram``, ``memory.dram``, ``buffer``) to its full name, or raise TableError."""
    k = key.strip()
    for full, aliases in SWEEP_KEYS.items():
        if k == full or k in aliases:
            return full
    raise TableError(f"unknown table key {key!r}; known: {', '.join(SWEEP_KEYS)}")


def builtin_tables() -> list[str]:
    """Names of the tables shipped with the package."""
    folder = resources.files("energymodel.price") / "tables"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


#: the largest table file read (1 MiB; a shipped table is about 2 KiB): checked before parsing
MAX_TABLE_BYTES = 1 << 20

#: the largest number a table entry may hold (1e15: a pJ figure or buffer size beyond it is a typo; priced counts
#: would overflow to infinity)
MAX_VALUE = 1e15


def read_toml(path: Path | Any, what: str, limit: int, error: type[Exception]) -> dict[str, Any]:
    """Parse a TOML file of at most ``limit`` bytes (size checked first), as ``error`` (one line) otherwise.

    ``path`` is a file path or an ``importlib.resources`` traversable. Refuses files over the limit, text
    that is not UTF-8 or not TOML, and nesting too deep to parse (``RecursionError``).
    """
    try:
        size = path.stat().st_size if isinstance(path, Path) else len(path.read_bytes())
        if size > limit:
            raise error(f"{what} is {size:,} bytes, larger than the {limit:,} bytes accepted")
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:  # grew while we looked
        raise error(f"{what} is larger than the {limit:,} bytes accepted")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid TOML: {one_line(exc)}") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to read") from None


def load_table(spec: str | Path = "45nm") -> EnergyTable:
    """Load a shipped table by name (``45nm``, ``45nm-fp16`` ...) or a TOML file by path, validated.

    A file larger than :data:`MAX_TABLE_BYTES` is refused before it is parsed.
    """
    spec_s = str(spec)
    path = Path(spec_s)
    try:
        is_path, found = path.suffix == ".toml" or path.exists() or "/" in spec_s, path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise TableError(f"cannot read energy table file {spec_s}: {exc.strerror or exc}") from None
    if is_path:
        if not found:
            raise TableError(f"energy table file not found: {spec_s}")
        return parse_table(read_toml(path, f"energy table {path}", MAX_TABLE_BYTES, TableError), str(path))
    res = resources.files("energymodel.price") / "tables" / f"{spec_s}.toml"
    if not res.is_file():
        raise TableError(f"unknown energy table {spec_s!r}; shipped: {', '.join(builtin_tables())}, or a .toml file")
    return parse_table(read_toml(res, f"energy table {spec_s}", MAX_TABLE_BYTES, TableError), spec_s)


def _number(value: Any, label: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TableError(f"{label} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise TableError(f"{label} must be finite, got {value!r}")
    if v < minimum:
        raise TableError(f"{label} must be >= {minimum:g}, got {value!r}")
    if v > MAX_VALUE:
        raise TableError(f"{label} must be at most {MAX_VALUE:g}, got {value!r}")
    return v


def _positive(value: Any, label: str) -> float:
    v = _number(value, label)
    if v <= 0:
        raise TableError(f"{label} must be > 0, got {value!r}")
    return v


def _rf_words(value: Any, label: str) -> tuple[float, float, float]:
    """``rf_words``: one size for the three register files, or ``{input, weight, output}``."""
    if isinstance(value, dict):
        _only(value, RF_OPERANDS, label)
        for key in RF_OPERANDS:
            if key not in value:
                raise TableError(f"{label}: missing entry {key!r}")
        return tuple(_positive(value[k], f"{label}.{k}") for k in RF_OPERANDS)  # type: ignore[return-value]
    v = _positive(value, label)
    return (v, v, v)


def _array(value: Any, label: str) -> tuple[int, int, tuple[str, str]]:
    """``[dataflow.array]``: ``rows``, ``cols`` (integers >= 1) and ``unroll`` (``["K", "C"]`` or ``["C", "K"]``)."""
    if not isinstance(value, dict):
        raise TableError(f"{label} must be a table, got {type(value).__name__}")
    _only(value, ("rows", "cols", "unroll"), label)
    sizes = []
    for key in ("rows", "cols"):
        v = value.get(key, 16)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
            raise TableError(f"{label}.{key} must be an integer 1..{1 << 20}, got {v!r}")
        sizes.append(v)
    unroll = value.get("unroll", ["K", "C"])
    if not isinstance(unroll, list) or sorted(map(str, unroll)) != ["C", "K"]:
        raise TableError(f"{label}.unroll must be [\"K\", \"C\"] or [\"C\", \"K\"], got {unroll!r}")
    return sizes[0], sizes[1], (str(unroll[0]), str(unroll[1]))


def _string(value: Any, label: str) -> str:
    if not isinstance(value, str):
        raise TableError(f"{label} must be a string, got {type(value).__name__} {value!r}")
    return value


def _only(d: dict, allowed: tuple[str, ...], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise TableError(f"{where}: unknown entry {k!r} (allowed: {', '.join(allowed)})")


def _section(data: dict, key: str, where: str) -> dict:
    if key not in data:
        raise TableError(f"{where}: missing entry {key!r}")
    if not isinstance(data[key], dict):
        raise TableError(f"{where}: {key} must be a table, got {type(data[key]).__name__}")
    return data[key]


def parse_table(data: dict[str, Any], where: str = "<table>") -> EnergyTable:
    """Validate a parsed TOML document and build an :class:`EnergyTable`."""
    _only(data, (*_TOP_STR, "voltage", "word_bits", "operations", "memory", "dataflow"), where)
    strings = {}
    for key in _TOP_STR:
        if key not in data:
            raise TableError(f"{where}: missing entry {key!r}")
        strings[key] = _string(data[key], f"{where}: {key}")
    voltage = _number(data.get("voltage", 0.0), f"{where}: voltage")
    if "word_bits" not in data:
        raise TableError(f"{where}: missing entry 'word_bits'")
    wb = data["word_bits"]
    if isinstance(wb, bool) or not isinstance(wb, int) or not 1 <= wb <= 64:
        raise TableError(f"{where}: word_bits must be an integer 1..64, got {wb!r}")

    ops_raw = _section(data, "operations", where)
    _only(ops_raw, OPERATIONS, f"{where}: operations")
    ops: dict[str, Entry] = {}
    for op in OPERATIONS:
        label = f"{where}: operations.{op}"
        if op not in ops_raw:
            raise TableError(f"{where}: missing entry 'operations.{op}'")
        v = ops_raw[op]
        if isinstance(v, dict):
            _only(v, ("pj", "source"), label)
            if "pj" not in v:
                raise TableError(f"{label}: missing entry 'pj'")
            ops[op] = Entry(_number(v["pj"], f"{label}.pj"), _string(v.get("source", ""), f"{label}.source"))
        else:
            ops[op] = Entry(_number(v, label))

    mem_raw = _section(data, "memory", where)
    _only(mem_raw, LEVELS, f"{where}: memory")
    mem: dict[str, MemoryLevel] = {}
    for lvl in LEVELS:
        label = f"{where}: memory.{lvl}"
        v = _section(mem_raw, lvl, f"{where}: memory")
        _only(v, ("pj", "bits", "source"), label)
        for req in ("pj", "bits"):
            if req not in v:
                raise TableError(f"{label}: missing entry {req!r}")
        bits = v["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
            raise TableError(f"{label}.bits must be a positive integer, got {bits!r}")
        mem[lvl] = MemoryLevel(_number(v["pj"], f"{label}.pj"), bits, _string(v.get("source", ""), f"{label}.source"))

    flow = Dataflow()
    if "dataflow" in data:
        fl = _section(data, "dataflow", where)
        _only(fl, ("buffer_bytes", "rf_accesses_per_op", "rf_words", "tiling", "reuse", "array", "sram_weight",
                   "tiles"),
              f"{where}: dataflow")
        buf = fl.get("buffer_bytes", flow.buffer_bytes)
        if isinstance(buf, bool) or not isinstance(buf, int) or not 0 <= buf <= MAX_VALUE:
            raise TableError(f"{where}: dataflow.buffer_bytes must be an integer 0..{MAX_VALUE:g}, got {buf!r}")
        rf = _number(fl.get("rf_accesses_per_op", flow.rf_accesses_per_op), f"{where}: dataflow.rf_accesses_per_op")
        reuse = _string(fl.get("reuse", flow.reuse), f"{where}: dataflow.reuse")
        if reuse not in REUSE:
            raise TableError(f"{where}: dataflow.reuse must be one of {', '.join(REUSE)}, got {reuse!r}")
        rf_words = _rf_words(fl.get("rf_words", 32.0), f"{where}: dataflow.rf_words")
        tiling = fl.get("tiling", flow.tiling)
        if not isinstance(tiling, bool):
            raise TableError(f"{where}: dataflow.tiling must be true or false, got {tiling!r}")
        rows, cols, unroll = _array(fl["array"] if "array" in fl else {}, f"{where}: dataflow.array")
        flow = Dataflow(buf, rf, reuse, rf_words, tiling, rows, cols, unroll)
        tiles = _string(fl.get("tiles", flow.tiles), f"{where}: dataflow.tiles")
        if tiles not in TILES:
            raise TableError(f"{where}: dataflow.tiles must be one of {', '.join(TILES)}, got {tiles!r}")
        flow = dataclasses.replace(flow, tiles=tiles)
        if "sram_weight" in fl:
            flow = dataclasses.replace(flow, sram_weight=_number(fl["sram_weight"], f"{where}: dataflow.sram_weight"))
    if "dataflow" not in data or "sram_weight" not in data["dataflow"]:
        rf_pj = mem["rf"].per_word(wb)
        flow = dataclasses.replace(flow, sram_weight=mem["sram"].per_word(wb) / rf_pj if rf_pj > 0 else 1.0)
    return EnergyTable(
        name=strings["name"], description=strings["description"], technology=strings["technology"],
        voltage=voltage, datatype=strings["datatype"], word_bits=wb, source=strings["source"],
        operations=ops, memory=mem, dataflow=flow, path=where,
    )

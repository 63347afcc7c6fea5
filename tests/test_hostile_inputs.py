"""Property-based tests: hostile interaction files and option values against the command
line's contract, through ``hybridrec.cli.main`` in-process.

The contract, for every input hypothesis can make up:

- the exit status is 0 or 2, never a traceback (an uncaught exception fails the test);
- on 2, stderr ends with exactly one ``error: ...`` line, and no other line is an error
  (argparse's own refusals, e.g. ``--lr -1e+16`` read as a flag, print its usage first);
- an existing model directory passed as ``--out`` is byte-for-byte unchanged unless the run
  succeeded.

Files are CSV (random header names and orders, repeated names, random cells: huge numbers,
floats, unicode, blanks, quotes, line breaks, a BOM, ragged rows, raw bytes) and Parquet
(random column types: 64-bit and unsigned integers at their limits, non-finite floats,
text, binary, booleans, lists, structs, dictionaries, timestamps, nulls). They are tried
as training data, validation data, item catalogue, ``evaluate --data``, ``recommend
--users`` and ``split --data``. The example counts are set so that the file runs at least
2,000 cases in well under a minute on one thread (see ``CASES``).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import hybridrec
import hybridrec.pipeline
from hybridrec import TrainConfig
from hybridrec.cli import main

#: Examples per test; the sum is the number of generated cases per run (2,000, about
#: 30 s on one thread of a shared 2-core machine).
CASES = {
    "train_csv": 450,
    "train_parquet": 400,
    "commands_csv": 450,
    "commands_parquet": 400,
    "options": 300,
    "command_options": 200,
}

FAST = ["--epochs", "1", "--no-progress", "--embedding-dim", "4", "--mlp-layers", "4",
        "--device", "cpu", "--batch-size", "64", "--val", "none"]  # fmt: skip

ARTIFACT = ("config.json", "weights.pt", "id_maps.json", "metrics.json", "seen.npz")


def hostile(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small trained model (ids 1..12, items 1..20) whose copies serve as ``--out``."""
    directory = tmp_path_factory.mktemp("pristine")
    rows = "".join(f"{u},{(u * 7 + k) % 20 + 1},1\n" for u in range(1, 13) for k in range(4))
    (directory / "train.csv").write_text("userId,itemId,target\n" + rows)
    hybridrec.train(
        directory / "train.csv", None, out=directory / "model",
        model_options={"embedding_dim": 4, "mlp_layer_sizes": (4,)},
        train_config=TrainConfig(epochs=1, batch_size=64, device="cpu"),
    )  # fmt: skip
    return directory


@pytest.fixture
def workdir(tmp_path, monkeypatch, pristine):
    """Run in a temp folder, without the training-curves plot (matplotlib takes ~90% of a
    tiny run and is no part of the contract), and undo the CLI's warnings hook."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hybridrec.pipeline, "plot_history", lambda history, path: None)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    return tmp_path


@pytest.fixture
def out(workdir, pristine) -> Out:
    return Out(pristine, workdir)


def digest(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in ARTIFACT
        if (directory / name).exists()
    }


class Out:
    """A copy of the pristine model used as ``--out``, restored after a run replaced it."""

    def __init__(self, pristine: Path, workdir: Path) -> None:
        self.source = pristine / "model"
        self.path = workdir / "model"
        self.expected = digest(self.source)
        shutil.copytree(self.source, self.path)

    def check(self, code: int) -> None:
        """Unchanged unless the run succeeded; then restore it for the next example."""
        now = digest(self.path)
        if code != 0:
            assert now == self.expected, "a failed run changed the existing model"
        elif now != self.expected:
            shutil.rmtree(self.path)
            shutil.copytree(self.source, self.path)


def run(capsys, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` and the contract on its exit status and stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors: its usage, then one error line
        code = exc.code
        _, err = capsys.readouterr()
        prefix = f"hybridrec {argv[0]}: error: "
        assert code == 2 and err.splitlines()[-1].startswith(prefix), err
        return code, err
    _, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    if code == 2:
        assert len(errors) == 1, err
        assert err.rstrip("\n").splitlines()[-1] == errors[0], err
    else:
        assert not errors, err
    event(f"exit {code}")  # --hypothesis-show-statistics shows how many runs succeeded
    return code, err


# ---------------------------------------------------------------- CSV strategies

NAMES = ["userId", "itemId", "target", "timestamp", "rating", "label"]
SPECIAL_CELLS = [
    "", " ", "0", "1", "-1", "true", "no", "NaN", "nan", "inf", "-inf", "1e400", "-0", "007",
    "1.0", "1.5", "2020-01-01", "2020-13-45", "1600000000", '"', '""', "a,b", "\n", "\r\n",
    "\ufeff", "None", "null", "\x00", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "  42  ", "٣", "ｉｄ", "💥",
]  # fmt: skip

cell = st.one_of(
    st.integers(1, 25).map(str),  # ids the pristine model knows (and a few it does not)
    st.integers(0, 1).map(str),
    st.sampled_from(SPECIAL_CELLS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=6),
)
header = st.one_of(
    st.permutations(["userId", "itemId", "target"]).map(list),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=5),
    st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=5)), min_size=1, max_size=5),
)


@st.composite
def near_valid_csv(draw) -> tuple[str, bytes]:
    """A valid file (known and unknown ids, 0/1 labels, timestamps) with a few cells
    replaced by hostile ones: errors deep in a file, and runs that train and save."""
    names = draw(st.permutations(["userId", "itemId", "target", "timestamp"]))
    names = names[: draw(st.integers(2, 4))] if names.index("userId") < 2 else names
    valid = {
        "userId": st.integers(1, 14).map(str),
        "itemId": st.integers(1, 22).map(str),
        "target": st.sampled_from(["0", "1", "1"]),
        "timestamp": st.integers(10**9, 2 * 10**9).map(str),
    }
    rows = draw(st.lists(st.tuples(*[valid[n] for n in names]).map(list), min_size=1, max_size=15))
    for _ in range(draw(st.integers(0, 2))):
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(names) - 1))
        rows[row][column] = draw(cell)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([names, *rows])
    return ".csv", buffer.getvalue().encode("utf-8")


@st.composite
def wild_csv(draw) -> tuple[str, bytes]:
    """``(suffix, content)`` of a CSV-like file, usually well quoted, sometimes not."""
    names = draw(header)
    good_cells = draw(st.booleans())
    row_cell = st.integers(1, 20).map(str) if good_cells else cell
    ragged = draw(st.integers(0, 9)) == 0
    rows = draw(
        st.lists(
            st.lists(row_cell, min_size=max(1, len(names) - ragged), max_size=len(names) + ragged)
            if ragged
            else st.lists(row_cell, min_size=len(names), max_size=len(names)),
            max_size=12,
        )
    )
    if "target" in names and good_cells:  # mostly valid labels, so that some runs train
        position = names.index("target")
        rows = [r[:position] + [draw(st.sampled_from(["0", "1", "1"]))] + r[position + 1 :]
                if len(r) > position else r for r in rows]  # fmt: skip
    suffix = draw(st.sampled_from([".csv", ".csv", ".tsv", ".txt"]))
    sep = "\t" if suffix == ".tsv" else ","
    if draw(st.integers(0, 14)) == 0:
        return suffix, draw(st.binary(max_size=80))
    buffer = io.StringIO()
    if draw(st.booleans()):
        writer = csv.writer(
            buffer, delimiter=sep, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))
        )
        writer.writerow(names)
        writer.writerows(rows)
    else:  # unquoted: separators and line breaks inside cells break the layout
        buffer.write("\n".join(sep.join(r) for r in [names, *rows]) + "\n")
    text = buffer.getvalue()
    if draw(st.integers(0, 5)) == 0:
        text = "\ufeff" + text
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]))
    return suffix, text.encode(encoding, errors="replace")


def csv_files() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(near_valid_csv(), wild_csv())


# ---------------------------------------------------------------- Parquet strategies

column_arrays = st.one_of(
    st.lists(st.integers(1, 20), min_size=1, max_size=10).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=1, max_size=10).map(
        lambda v: pa.array(v, pa.int64())
    ),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=10).map(
        lambda v: pa.array(v, pa.uint64())
    ),
    st.lists(st.floats() | st.none(), min_size=1, max_size=10).map(
        lambda v: pa.array(v, pa.float64())
    ),
    st.lists(st.integers(1, 20).map(float), min_size=1, max_size=10).map(pa.array),
    st.lists(st.text(max_size=5) | st.none(), min_size=1, max_size=10).map(
        lambda v: pa.array(v, pa.string())
    ),
    st.lists(st.sampled_from(["1", "2", "a", ""]), min_size=1, max_size=10).map(
        lambda v: pa.array(v).dictionary_encode()
    ),
    st.lists(st.binary(max_size=4), min_size=1, max_size=10).map(pa.array),
    st.lists(st.booleans(), min_size=1, max_size=10).map(pa.array),
    st.lists(st.lists(st.integers(0, 5), max_size=2), min_size=1, max_size=10).map(pa.array),
    st.lists(st.fixed_dictionaries({"a": st.integers(0, 3)}), min_size=1, max_size=10).map(
        pa.array
    ),
    st.lists(st.datetimes(min_value=datetime.datetime(1900, 1, 1)), min_size=1, max_size=10).map(
        pa.array
    ),
    st.integers(1, 10).map(lambda n: pa.nulls(n)),
    st.lists(st.sampled_from([0, 1]), min_size=1, max_size=10).map(pa.array),
)


@st.composite
def near_valid_parquet(draw) -> pa.Table:
    """Valid columns (user, item, maybe target) with one replaced by a hostile array."""
    size = draw(st.integers(1, 12))
    columns = {
        "userId": pa.array(draw(st.lists(st.integers(1, 14), min_size=size, max_size=size))),
        "itemId": pa.array(draw(st.lists(st.integers(1, 22), min_size=size, max_size=size))),
    }
    if draw(st.booleans()):
        columns["target"] = pa.array(draw(st.lists(st.sampled_from([0, 1, 1]), min_size=size,
                                                   max_size=size)))  # fmt: skip
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(columns)))
        hostile_column = draw(column_arrays)
        if len(hostile_column) >= size:
            columns[name] = hostile_column.slice(0, size)
    return pa.table(columns)


@st.composite
def wild_parquet(draw) -> pa.Table:
    """A table of random column types under random (maybe repeated) names, cut to the
    shortest column so that it is rectangular."""
    names = draw(header)
    arrays = [draw(column_arrays) for _ in names]
    length = min(len(a) for a in arrays) if draw(st.integers(0, 9)) else 0
    return pa.Table.from_arrays([a.slice(0, length) for a in arrays], names=names)


def parquet_tables() -> st.SearchStrategy[pa.Table]:
    return st.one_of(near_valid_parquet(), wild_parquet())


# ---------------------------------------------------------------- the properties


def train_roles(path: Path, role: str) -> list:
    """``train`` with the hostile file as training data, validation data or catalogue."""
    good = Path("good.csv")
    if not good.exists():
        good.write_text("userId,itemId\n" + "".join(f"{u},{u % 5 + 1}\n" for u in range(1, 9)))
    if role == "train":
        return ["train", "--train", path, *FAST]
    if role == "val":
        return ["train", "--train", good, *FAST[:-2], "--val", path]
    return ["train", "--train", good, "--items", path, *FAST]


@hostile(CASES["train_csv"])
@given(file=csv_files(), role=st.sampled_from(["train", "train", "val", "items"]))
def test_train_on_hostile_csv(workdir, out, capsys, file, role):
    suffix, content = file
    path = workdir / f"in{suffix}"
    path.write_bytes(content)
    code, _ = run(capsys, [*train_roles(path, role), "--out", out.path])
    out.check(code)


@hostile(CASES["train_parquet"])
@given(table=parquet_tables(), role=st.sampled_from(["train", "train", "val", "items"]))
def test_train_on_hostile_parquet(workdir, out, capsys, table, role):
    path = workdir / "in.parquet"
    pq.write_table(table, path)
    code, _ = run(capsys, [*train_roles(path, role), "--out", out.path])
    out.check(code)


def other_command(path: Path, model: Path, command: str) -> list:
    if command == "evaluate":
        return ["evaluate", "--model", model, "--data", path, "--json"]
    if command == "ranking":
        return ["evaluate", "--model", model, "--train", path, "--test", path, "--json"]
    if command == "recommend":
        return ["recommend", "--model", model, "--users", path, "--output", "recs.csv",
                "--no-progress"]  # fmt: skip
    return ["split", "--data", path, "--out", "parts", "--method", "loo-random"]


COMMANDS = ["evaluate", "ranking", "recommend", "split"]


@hostile(CASES["commands_csv"])
@given(file=csv_files(), command=st.sampled_from(COMMANDS))
def test_other_commands_on_hostile_csv(workdir, pristine, capsys, file, command):
    suffix, content = file
    path = workdir / f"in{suffix}"
    path.write_bytes(content)
    model = pristine / "model"
    before = digest(model)
    run(capsys, other_command(path, model, command))
    assert digest(model) == before  # reading a model never changes it


@hostile(CASES["commands_parquet"])
@given(table=parquet_tables(), command=st.sampled_from(COMMANDS))
def test_other_commands_on_hostile_parquet(workdir, pristine, capsys, table, command):
    path = workdir / "in.parquet"
    pq.write_table(table, path)
    run(capsys, other_command(path, pristine / "model", command))


# Option values: small ones that train quickly, and absurd ones (negative, zero, huge,
# non-finite, beyond 64 bits) that must be refused up front. --epochs stays 1 and
# --threads never changes this process's thread count (it is process-wide).
small_ints = st.integers(-3, 40)
absurd_ints = st.sampled_from([2**31, 2**40, 2**62, 2**63, 2**64, -(2**63) - 1, 10**30])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "1e-320", "-0.0", "0", "1", "0.5"]),
)
INT_FLAGS = ["--embedding-dim", "--batch-size", "--seed", "--negatives", "--softmax-negatives",
             "--patience", "--eval-batch-size", "--checkpoint-every"]  # fmt: skip
FLOAT_FLAGS = ["--lr", "--weight-decay", "--dropout", "--init-std", "--ema-decay",
               "--recency-half-life", "--recency-floor", "--catalogue-weight",
               "--threshold"]  # fmt: skip
option = st.one_of(
    st.tuples(st.sampled_from(INT_FLAGS), st.one_of(small_ints, absurd_ints).map(str)),
    st.tuples(st.sampled_from(FLOAT_FLAGS), numbers),
    st.tuples(
        st.just("--mlp-layers"),
        st.lists(st.one_of(small_ints, absurd_ints), max_size=3).map(
            lambda v: ",".join(map(str, v))
        ),
    ),
    st.tuples(
        st.just("--k"), st.lists(small_ints, max_size=3).map(lambda v: ",".join(map(str, v)))
    ),
    st.tuples(st.just("--threads"), st.sampled_from(["0", "1", "-1", "1025", str(2**63)])),
    st.tuples(
        st.just("--model"), st.sampled_from(["hybrid", "mf", "gmf", "mlp", "neumf", "popularity"])
    ),
    st.tuples(st.just("--loss"), st.sampled_from(["auto", "bce", "bpr", "ce", "nope"])),
    st.tuples(st.just("--early-stop"), st.sampled_from(["auto", "none", "ndcg@0", "hr@3", "x"])),
)


@hostile(CASES["options"])
@given(options=st.lists(option, max_size=4), labelled=st.booleans())
def test_train_with_hostile_option_values(workdir, pristine, out, capsys, options, labelled):
    data = pristine / "train.csv"
    if not labelled:  # positives only: the sampled objectives and their options
        data = workdir / "positives.csv"
        data.write_text("userId,itemId\n" + "".join(f"{u},{u % 7 + 1}\n" for u in range(1, 15)))
    flags = [part for pair in options for part in pair]
    code, err = run(capsys, ["train", "--train", data, *FAST, *flags, "--out", out.path])
    out.check(code)


# The same for the commands that read a model: every integer option of any size, K lists
# included (a K beyond the catalogue lists every item; one beyond 64 bits is refused).
any_ints = st.one_of(small_ints, absurd_ints, st.just(2**63 - 1))
k_lists = st.lists(any_ints, max_size=3).map(lambda v: ",".join(map(str, v)))
command_option = st.one_of(
    st.tuples(st.just("--k"), k_lists),
    st.tuples(st.sampled_from(["--seed", "--num-negatives"]), any_ints.map(str)),
    st.tuples(st.just("--protocol"), st.sampled_from(["full", "sampled", "nope"])),
)


@hostile(CASES["command_options"])
@given(options=st.lists(command_option, max_size=3), command=st.sampled_from(
    ["evaluate", "recommend"]))  # fmt: skip
def test_commands_with_hostile_option_values(workdir, pristine, capsys, options, command):
    flags = [part for pair in options for part in pair]
    data, model = pristine / "train.csv", pristine / "model"
    if command == "recommend":  # --k alone: the other options are evaluate's
        flags = [part for pair in options if pair[0] == "--k" for part in pair]
        argv = ["recommend", "--model", model, "--users", data, "--output", "recs.csv",
                "--no-progress", *flags]  # fmt: skip
    else:
        argv = ["evaluate", "--model", model, "--train", data, "--test", data, "--json", *flags]
    code, err = run(capsys, argv)
    last = {flag: text for flag, text in options}  # argparse keeps a flag's last value
    used = [(f, t) for f, t in last.items() if command == "evaluate" or f == "--k"]
    values = [int(v) for _, text in used for v in text.split(",") if v.lstrip("-").isdigit()]
    if any(abs(v) > 2**63 - 1 for v in values):
        assert code == 2, err  # refused up front, not an overflow mid-run

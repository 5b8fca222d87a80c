"""Ingest of complex_regression tasks: tables, patches, folds, formats and refusals of bad input."""

import gzip
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from Bio.PDB import MMCIFIO, PDBParser

from copra.cli import main
from copra.complexes import KIND, assign_folds, ingest_complexes, run_ingest_complexes
from copra.demo_complexes import write_demo_complexes
from copra.errors import InputError
from copra.settings import ComplexSettings, TaskSettings
from copra.structures import interface, read_structure, resolve_chains

N = 40
LABEL = {"label": "dG_kcal_mol"}
OUTPUTS = [
    "chains.fasta",
    "chains.tsv",
    "manifest.json",
    "mutations.tsv",
    "patches.tsv",
    "sequences.tsv",
    "skipped.tsv",
    "table.tsv",
]
RECORDS = ("ATOM", "HETATM")
FIRST = r"complex cplx_000 \(line 2 of \S+complexes\.csv\): \S+cplx_000\.pdb: "


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's complex task, generated once."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_complexes(folder, N, seed=0)
    return folder


@pytest.fixture(scope="module")
def ingested(demo, tmp_path_factory):
    """The demo ingested with its mutations: the result and the folder of its tables."""
    out = tmp_path_factory.mktemp("ingested")
    task = TaskSettings(
        KIND,
        labels=demo / "complexes.csv",
        structures=demo / "structures",
        columns=LABEL,
        mutations=demo / "complex_mutations.csv",
    )
    return run_ingest_complexes(task, out, ComplexSettings()), out


def copy_demo(demo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo, tmp_path / "demo"))


def ingest(folder, mutations=False, columns=LABEL, **settings):
    """ingest_complexes of a demo folder."""
    return ingest_complexes(
        folder / "complexes.csv",
        folder / "structures",
        columns=columns,
        mutations=folder / "complex_mutations.csv" if mutations else None,
        settings=ComplexSettings(**settings),
    )


def cli(folder, out, mutations=False, columns=LABEL, **settings) -> int:
    """`copra ingest` of a demo folder into `out`: the exit status."""
    args = [
        "ingest",
        "--kind",
        KIND,
        "--labels",
        str(folder / "complexes.csv"),
        "--structures",
        str(folder / "structures"),
        "--output-dir",
        str(out),
    ]
    args += [f"--column={key}={value}" for key, value in columns.items()]
    args += ["--mutations", str(folder / "complex_mutations.csv")] if mutations else []
    args += [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    return main(args)


def rewrite(path: Path, edit) -> None:
    """Replace a text file's lines (ends kept) by edit(lines)."""
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))


def on_table(edit):
    return lambda folder: rewrite(folder / "complexes.csv", edit)


def on_structure(edit, name="cplx_000"):
    return lambda folder: rewrite(folder / "structures" / f"{name}.pdb", edit)


def set_fields(line: int, values: dict[int, str]):
    """An edit of a CSV's line (numbered from 1): {column index: new value}."""

    def edit(lines):
        fields = lines[line - 1].rstrip("\n").split(",")
        for column, value in values.items():
            fields[column] = value
        return [*lines[: line - 1], ",".join(fields) + "\n", *lines[line:]]

    return edit


def atoms(keep):
    """An edit of PDB text keeping the ATOM/HETATM lines for which keep(chain, atom) holds."""
    return lambda lines: [
        x for x in lines if not x.startswith(RECORDS) or keep(x[21], x[12:16].strip())
    ]


def shift_chain(chain: str, dx: float):
    """An edit of PDB text moving one chain by `dx` Å along x."""
    return lambda lines: [
        f"{x[:30]}{float(x[30:38]) + dx:8.3f}{x[38:]}"
        if x.startswith(RECORDS) and x[21] == chain
        else x
        for x in lines
    ]


def first_mutation(folder) -> dict:
    """The demo's first mutation (a single K/R to A): its complex, wild type and residue number."""
    row = pd.read_csv(folder / "complex_mutations.csv").iloc[0]
    wild, number = re.fullmatch(r"A:([KR])(\d+)A", row.mutation).groups()
    return {"pdb": row.pdb, "wild": wild, "number": number}


def mutation(template: str):
    """An edit making the mutations table one row, `template` filled from first_mutation."""

    def edit(folder):
        text = template.format(**first_mutation(folder))
        (folder / "complex_mutations.csv").write_text(f"pdb,mutation,ddg\n{text},0.3\n")

    return edit


def test_demo_ingest(demo, ingested):
    """Rows, labels, folds, patches, sequences and FASTA of the demo; distractor D left out."""
    result, out = ingested
    labels = pd.read_csv(demo / "complexes.csv")
    table, chains, patches = result.table, result.chains, result.patches
    assert table.id.tolist() == labels.pdb.tolist()
    assert table.label.tolist() == labels.dG_kcal_mol.tolist()
    assert set(table.split) == {"cv"} and result.skipped.empty
    sizes = np.bincount(table.fold, minlength=5)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 1
    assert ingest(demo).table.fold.tolist() == table.fold.tolist()
    assert ingest(demo, fold_seed=1).table.fold.tolist() != table.fold.tolist()
    for row in labels.itertuples():
        own = chains[chains.id == row.pdb]
        assert own.chain.tolist() == [*row.protein_chains, "B"]
        assert own.kind.tolist() == ["protein"] * len(row.protein_chains) + ["rna"]
    # Every demo complex is smaller than 256 residues: the patch is all of its named chains.
    length = chains.sequence.str.len().groupby(chains.id).sum()
    tokens = patches.groupby("id").size()
    assert (table.tokens <= 256).all()
    assert tokens[table.id].tolist() == table.tokens.tolist() == length[table.id].tolist()
    for _, patch in patches.groupby("id"):
        assert patch.kind.tolist() == sorted(patch.kind, key=["protein", "rna"].index)
    sequence = {(row.id, row.chain): row.sequence for row in chains.itertuples()}
    assert all(sequence[(r.id, r.chain)][r.position] == r.letter for r in patches.itertuples())
    # Sequences: the protein chains plus one mutant per variant, no RNA.
    written = set(pd.read_csv(out / "sequences.tsv", sep="\t").sequence)
    proteins = set(chains[chains.kind == "protein"].sequence)
    variants = pd.read_csv(demo / "complex_mutations.csv")
    assert written >= proteins and len(written - proteins) == len(variants)
    assert not written & set(chains[chains.kind == "rna"].sequence)
    first = first_mutation(demo)
    wild = sequence[(first["pdb"], "A")]
    residues = read_structure(demo / "structures" / f"{first['pdb']}.pdb").chains["A"].residue_ids
    at = residues.index(first["number"])
    assert wild[at] == first["wild"] and f"{wild[:at]}A{wild[at + 1 :]}" in written
    records = re.findall(r"^>(\S+)\n(\S+)$", (out / "chains.fasta").read_text(), re.M)
    assert records == [(f"{r.id}_{r.chain}", r.sequence) for r in chains.itertuples()]
    structures = (demo / "structures").glob("*.pdb")
    assert any(" D " in path.read_text() for path in structures)  # the distractor exists...
    assert "D" not in {*chains.chain, *patches.chain}  # ...and is left out


def test_small_patch_is_nearest_the_interface_centre(demo):
    result = ingest(demo, patch_residues=20)
    assert (result.table.tokens == 20).all()
    for row in result.table.itertuples():
        structure = read_structure(demo / "structures" / row.file)
        contacts = interface(structure, row.protein_chains, row.rna_chains, 8.0)
        coords = {
            (c, rid): xyz
            for c in (*contacts.protein_chains, *contacts.rna_chains)
            for rid, xyz in zip(
                structure.chains[c].residue_ids, structure.chains[c].coords, strict=True
            )
        }
        centre = np.mean([coords[key] for key in contacts.residues], axis=0)
        distance = {key: np.linalg.norm(xyz - centre) for key, xyz in coords.items()}
        patch = result.patches[result.patches.id == row.id]
        chosen = list(zip(patch.chain, patch.residue_id, strict=True))
        assert len(set(chosen)) == 20
        rest = [d for key, d in distance.items() if key not in chosen]
        assert max(distance[key] for key in chosen) <= min(rest)
        assert np.allclose(patch[["x", "y", "z"]], [coords[key] for key in chosen])


def test_given_split_is_kept(demo, tmp_path):
    folder = copy_demo(demo, tmp_path)
    given = ["train", "Valid", "test", "validation"]
    rewrite(
        folder / "complexes.csv",
        lambda lines: (
            [lines[0].rstrip() + ",split\n"]
            + [f"{x.rstrip()},{given[i % 4]}\n" for i, x in enumerate(lines[1:])]
        ),
    )
    table = ingest(folder).table
    assert table.split.tolist() == [["train", "valid", "test", "valid"][i % 4] for i in range(N)]
    assert (table.fold == 0).all()
    rewrite(folder / "complexes.csv", set_fields(5, {4: "holdout"}))
    with pytest.raises(InputError, match=r"complexes\.csv:5: split 'holdout' is not train"):
        ingest(folder)


def convert(path: Path, form: str) -> None:
    """Replace a .pdb file by the same structure as `form`: .cif, .pdb.gz or .cif.gz."""
    text = path.read_text()
    if form.startswith(".cif"):
        writer, buffer = MMCIFIO(), io.StringIO()
        writer.set_structure(PDBParser(QUIET=True).get_structure(path.stem, path))
        writer.save(buffer)
        text = buffer.getvalue()
    path.unlink()
    data = gzip.compress(text.encode()) if form.endswith(".gz") else text.encode()
    path.with_name(path.stem + form).write_bytes(data)


def test_pdb_mmcif_and_gzip_ingest_alike(demo, ingested, tmp_path):
    folder, forms = copy_demo(demo, tmp_path), [".cif", ".pdb.gz", ".cif.gz"]
    for i, name in enumerate(ingested[0].table.id):
        convert(folder / "structures" / f"{name}.pdb", forms[i % 3])
    result, expected = ingest(folder, mutations=True), ingested[0]
    assert result.table.file.tolist() == [
        f"{n}{forms[i % 3]}" for i, n in enumerate(result.table.id)
    ]
    pd.testing.assert_frame_equal(
        result.table.drop(columns="file"), expected.table.drop(columns="file")
    )
    for name in ("chains", "patches", "sequences", "mutations"):
        pd.testing.assert_frame_equal(getattr(result, name), getattr(expected, name))
    assert result.fasta == expected.fasta


BAD = [  # (id, edit of a demo copy, patterns of the message, ingest options)
    ("garbage", on_structure(lambda lines: ["not a structure\n"]), [FIRST + "no atom records"], {}),
    (
        "truncated_atom",
        on_structure(lambda lines: [lines[0][:35] + "\n", *lines[1:]]),
        [r"cplx_000\.pdb:1: cannot be read as PDB: Invalid or missing coordinate"],
        {},
    ),
    (
        "absent_chain",
        on_table(set_fields(2, {1: "Z"})),
        [
            FIRST + r"chain Z is not in the "
            r"structure; chains present: A \(protein\), B \(rna\), D \(protein\)"
        ],
        {},
    ),
    (
        "rna_as_protein",
        on_table(set_fields(2, {1: "B", 2: "A"})),
        [FIRST + "chain B is rna, not protein"],
        {},
    ),
    (
        "no_contact",
        on_structure(shift_chain("B", 100.0)),
        [FIRST + r"no contact within 8\.0 Å between protein chains A and RNA chains B"],
        {},
    ),
    (
        "protein_ca_only",
        on_structure(atoms(lambda chain, atom: chain != "A" or atom == "CA")),
        [FIRST + r"chain A has only CA atoms \(\d+ residues\): a coarse-grained model"],
        {},
    ),
    (
        "all_coarse",
        on_structure(atoms(lambda chain, atom: atom in ("CA", "P"))),
        [FIRST + r"chain A has only CA atoms \(\d+ residues\): a coarse-grained model"],
        {},
    ),
    (
        "missing_file",
        lambda folder: (folder / "structures" / "cplx_000.pdb").unlink(),
        [r"demo/structures: no structure file for 'cplx_000'"],
        {},
    ),
    (
        "duplicate",
        on_table(lambda lines: [*lines, lines[1]]),
        [
            rf"complexes\.csv:{N + 2}: "
            rf"complex 'cplx_000' is listed twice \(lines 2 and {N + 2}\)"
        ],
        {},
    ),
    (
        "missing_column",
        None,
        [
            r"no column for label \(the table has: pdb, protein_chains, "
            r"rna_chains, dG_kcal_mol\)",
            "`columns:` setting",
        ],
        {"columns": {}},
    ),
    (
        "label_not_number",
        on_table(set_fields(3, {3: "strong"})),
        [r"complexes\.csv:3: label 'strong' is not a number"],
        {},
    ),
    (
        "too_few_for_folds",
        on_table(lambda lines: lines[:4]),
        [r"3 complexes cannot fill 5 folds; lower complex\.folds"],
        {},
    ),
    (
        "wild_type_mismatch",
        mutation("{pdb},A:W{number}A"),
        [r"mutations\.csv:2: residue A:{number} is {wild} \([A-Z]+\), not W"],
        {"mutations": True},
    ),
    (
        "chain_not_named",
        mutation("{pdb},D:W{number}A"),
        [
            r"mutations\.csv:2: chain D of "
            r"'D:W{number}A' is not one of the complex's chains \(A(, C)?, B\)"
        ],
        {"mutations": True},
    ),
    (
        "no_such_residue",
        mutation("{pdb},A:{wild}999A"),
        [r"mutations\.csv:2: chain A has no residue 999"],
        {"mutations": True},
    ),
    (
        "malformed_mutation",
        mutation("{pdb},A{wild}{number}A"),
        [r"mutations\.csv:2: mutation 'A{wild}{number}A' is not like A:Y23F"],
        {"mutations": True},
    ),
    (
        "unknown_complex",
        mutation("cplx_999,A:{wild}{number}A"),
        [r"mutations\.csv:2: complex 'cplx_999' is not in the task's label table"],
        {"mutations": True},
    ),
]


@pytest.mark.parametrize(
    ("edit", "patterns", "options"), [pytest.param(*c[1:], id=c[0]) for c in BAD]
)
def test_bad_input_is_refused(demo, tmp_path, capsys, edit, patterns, options):
    """One clear InputError from the API; from the CLI status 2, the message and no files."""
    folder, out = copy_demo(demo, tmp_path), tmp_path / "out"
    if edit:
        edit(folder)
    with pytest.raises(InputError) as error:
        ingest(folder, **options)
    for pattern in patterns:
        assert re.search(pattern.format(**first_mutation(demo)), str(error.value)), error.value
    assert cli(folder, out, **options) == 2
    assert f"copra: error: {error.value}\n" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_skip_lists_and_logs_broken_complexes(demo, tmp_path, caplog):
    """on_error: skip leaves out broken complexes (and their mutations); all broken is an error."""
    folder = copy_demo(demo, tmp_path)
    on_structure(lambda lines: ["not a structure\n"], "cplx_001")(folder)
    on_table(set_fields(6, {2: "Z"}))(folder)  # cplx_004
    with caplog.at_level(logging.WARNING, logger="copra.complexes"):
        result = ingest(folder, mutations=True, on_error="skip")
    skipped = result.skipped
    assert skipped[["id", "line"]].values.tolist() == [["cplx_001", 3], ["cplx_004", 6]]
    assert re.search(r"cplx_001\.pdb: no atom records", skipped.reason[0])
    assert re.search(
        r"cplx_004\.pdb: chain Z is not in the structure; chains present: A ", skipped.reason[1]
    )
    kept = [f"cplx_{i:03d}" for i in range(N) if i not in (1, 4)]
    assert result.table.id.tolist() == kept
    assert set(result.chains.id) == set(result.patches.id) == set(kept)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipping complex cplx_001 (line 3)" in logged
    assert "skipping complex cplx_004 (line 6)" in logged
    variants = pd.read_csv(folder / "complex_mutations.csv")
    assert {"cplx_001", "cplx_004"} <= set(variants.pdb)
    assert result.mutations.variant.nunique() == variants.pdb.isin(kept).sum()
    assert re.search(r"leaving out mutation \S+ \(line \d+\): complex cplx_004 was skipped", logged)
    shutil.rmtree(folder / "structures")
    (folder / "structures").mkdir()
    with pytest.raises(InputError, match="every complex was skipped"):
        ingest(folder, on_error="skip")


def test_cli_writes_every_table(demo, tmp_path):
    out = tmp_path / "fresh" / "out"
    assert cli(demo, out, mutations=True, patch_residues=20, fold_seed=3) == 0
    assert sorted(path.name for path in out.iterdir()) == OUTPUTS
    table = pd.read_csv(out / "table.tsv", sep="\t")
    assert table.id.tolist() == [f"cplx_{i:03d}" for i in range(N)]
    assert (table.tokens == 20).all()
    assert table.fold.tolist() == assign_folds(N, 5, 3).tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    inputs = {Path(name).name for name in manifest["inputs"]}
    assert {"complexes.csv", "complex_mutations.csv", "cplx_000.pdb"} <= inputs
    assert len(inputs) == N + 2 and manifest["config"]["complex"]["patch_residues"] == 20


@pytest.mark.slow
def test_real_complexes_have_their_named_chains(shared_data, tmp_path):
    """All 70 PRDB complexes: chains.tsv holds exactly the named chains, kinds and sequences."""
    pra = shared_data / "pra"
    task = TaskSettings(KIND, labels=pra / "affinity.csv", structures=pra / "pdb", columns=LABEL)
    run_ingest_complexes(task, tmp_path, ComplexSettings())
    chains = pd.read_csv(tmp_path / "chains.tsv", sep="\t", dtype=str, keep_default_na=False)
    affinity = pd.read_csv(pra / "affinity.csv", dtype=str)
    assert len(affinity) == chains.id.nunique() == 70
    for row in affinity.itertuples():
        structure = read_structure(pra / "pdb" / f"{row.pdb}.pdb")
        proteins = resolve_chains(structure, row.protein_chains)
        rnas = resolve_chains(structure, row.rna_chains)
        own = chains[chains.id == row.pdb]
        assert own.chain.tolist() == [*proteins, *rnas], row.pdb
        assert own.kind.tolist() == ["protein"] * len(proteins) + ["rna"] * len(rnas), row.pdb
        expected = [structure.chains[c].sequence for c in own.chain]
        assert all(expected) and own.sequence.tolist() == expected, row.pdb

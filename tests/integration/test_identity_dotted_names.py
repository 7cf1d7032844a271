"""A table is (schema, name): ``a.b`` (schema a, table b) and ``public."a.b"`` are two tables, everywhere.

Production holds both, with different rows, beside ``"we""ird"``, ``"With a space"."With a space"`` and the pair
``"a.b".c`` / ``a."b.c"`` (which joined strings would also make one). The plan lists each, the copy carries each,
the integrity check covers each and fails when any one of them is tampered with in the target, and the backup
manifest counts and checksums each. What was carried is proven with this file's own SQL (a fingerprint of the rows
read from the catalogs' names on both sides), never with pgshift's checksums.
"""

from __future__ import annotations

import contextlib
import json
import typing as t

import backup_support as bs
import data_support as ds
import pytest
from psycopg2 import sql

# (schema, table) -> rows in production; the table's key in plans and results; its key in backup manifests.
TABLES: t.Dict[t.Tuple[str, str], int] = {
    ("a", "b"): 5,
    ("public", "a.b"): 7,
    ("public", 'we"ird'): 3,
    ("With a space", "With a space"): 4,
    ("a.b", "c"): 6,
    ("a", "b.c"): 8,
}
PLAN_KEYS = {
    ("a", "b"): "a.b",
    ("public", "a.b"): '"a.b"',
    ("public", 'we"ird'): '"we""ird"',
    ("With a space", "x.y"): 'With a space."x.y"',  # renamed in dev, carried through the mapping
    ("a.b", "c"): '"a.b".c',
    ("a", "b.c"): 'a."b.c"',
}
MANIFEST_KEYS = {
    ("a", "b"): "a.b",
    ("public", "a.b"): 'public."a.b"',
    ("public", 'we"ird'): 'public."we""ird"',
    ("With a space", "With a space"): "With a space.With a space",
    ("a.b", "c"): '"a.b".c',
    ("a", "b.c"): 'a."b.c"',
}
RENAMED = {("With a space", "x.y"): ("With a space", "With a space")}

MAPPING = """\
tables:
  '"With a space"."x.y"':
    from: '"With a space".With a space'
accept_loss:
  columns:
    - '"a.b".note'
"""


def _ddl(dev: bool) -> str:
    # Production: every table has (id, v) and some a note; dev drops public."a.b".note (kept in a.b), renames
    # "With a space"."With a space" to "x.y" and adds a foreign key from a.b to public."a.b".
    space = '"With a space"."x.y"' if dev else '"With a space"."With a space"'
    return f"""
CREATE SCHEMA a; CREATE SCHEMA "a.b"; CREATE SCHEMA "With a space";
CREATE TABLE a.b (id int PRIMARY KEY, v text, ref int, note text);
CREATE TABLE public."a.b" (id int PRIMARY KEY, v text{"" if dev else ", note text"});
CREATE TABLE public."we""ird" (id int PRIMARY KEY, v text);
CREATE TABLE {space} (id int PRIMARY KEY, v text);
CREATE TABLE "a.b".c (id int PRIMARY KEY, v text);
CREATE TABLE a."b.c" (id int PRIMARY KEY, v text);
{'ALTER TABLE a.b ADD FOREIGN KEY (ref) REFERENCES public."a.b" (id);' if dev else ""}
"""


def _fill(cluster: t.Any, database: str) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for (schema, name), rows in TABLES.items():
            table = sql.Identifier(schema, name)
            label = "%s|%s|" % (schema, name)
            cur.execute(
                sql.SQL("INSERT INTO {} (id, v) SELECT g, %s || g FROM generate_series(1, %s) g").format(table),
                (label, rows),
            )
        cur.execute("UPDATE a.b SET ref = id + 1, note = 'note of a.b ' || id")
        cur.execute("""UPDATE public."a.b" SET note = 'note of public."a.b" ' || id""")


def _fingerprint(cluster: t.Any, database: str, schema: str, name: str) -> t.Tuple[int, str]:
    """Row count and md5 of the sorted text of (id, v): the proof the copy's code never sees."""
    query = sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
        "FROM (SELECT ROW(t.id, t.v) AS r FROM {} t) s"
    ).format(sql.Identifier(schema, name))
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(query)
        rows, digest = cur.fetchone()
        return int(rows), str(digest)


@pytest.fixture(scope="module")
def carry(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[t.Tuple[ds.Carry, str]]:
    tmp = tmp_path_factory.mktemp("identity")
    source = ds.create_db(pg)
    dev = ds.create_db(pg)
    ds.run_sql(pg, source, _ddl(dev=False))
    ds.run_sql(pg, dev, _ddl(dev=True))
    _fill(pg, source)
    mapping = tmp / "mapping.yml"
    mapping.write_text(MAPPING)
    prepared = ds.prepare(pg, source, dev, str(tmp))
    yield prepared, str(mapping)
    for name in (prepared.target, source, dev):
        ds.drop_db(pg, name)


def test_plan_names_every_table_apart(carry: t.Tuple[ds.Carry, str], run_module: t.Callable[..., t.Any]) -> None:
    shop, mapping = carry
    # Without the mapping: exactly public."a.b".note and the renamed table are lost (a.b.note is still carried).
    bare = run_module("data_plan", shop.common_args(mapping=None), check=True)
    assert bare.failed
    assert bare.result["lost"]["columns"] == ['"a.b".note']
    assert bare.result["lost"]["tables"] == ["With a space.With a space"]

    plan = run_module("data_plan", dict(shop.common_args(mapping), schema_source=shop.conn("dev")), check=True)
    assert not plan.failed, plan.output
    res = plan.result
    assert res["problems"] == [] and res["lost"]["columns"] == [] and res["lost"]["tables"] == []
    assert res["lost"]["accepted_columns"] == ['"a.b".note']
    by_table = {p["table"]: p for p in res["plan"]}
    assert set(by_table) == set(PLAN_KEYS.values())
    for (schema, name), key in PLAN_KEYS.items():
        src_schema, src_name = RENAMED.get((schema, name), (schema, name))
        assert by_table[key]["source"] == PLAN_KEYS.get((src_schema, src_name), "With a space.With a space")
        assert by_table[key]["new"] is False
    assert [c["name"] for c in by_table["a.b"]["columns"]] == ["id", "v", "ref", "note"]
    assert [c["name"] for c in by_table['"a.b"']["columns"]] == ["id", "v"]
    # dev's foreign key a.b(ref) -> public."a.b"(id) was checked against the right parent: no orphan (ids 2..6 of 7)
    assert res["constraints_checked"] >= 7


def test_copy_carries_both_and_the_check_covers_both(
    carry: t.Tuple[ds.Carry, str], run_module: t.Callable[..., t.Any]
) -> None:
    shop, mapping = carry
    copy = run_module("data_copy", dict(shop.common_args(mapping), jobs=2))
    assert not copy.failed, copy.output
    assert set(copy.result["tables"]) == set(PLAN_KEYS.values())
    for (schema, name), key in PLAN_KEYS.items():
        src_schema, src_name = RENAMED.get((schema, name), (schema, name))
        expected = _fingerprint(shop.cluster, shop.source, src_schema, src_name)
        assert expected[0] == TABLES[(src_schema, src_name)]
        assert _fingerprint(shop.cluster, shop.target, schema, name) == expected, key
        assert copy.result["tables"][key]["rows"] == expected[0]
    # the two tables hold different rows, and each target table got its own source's rows
    assert _fingerprint(shop.cluster, shop.target, "a", "b") != _fingerprint(shop.cluster, shop.target, "public", "a.b")
    assert ds.execute(shop.cluster, shop.target, "SELECT min(v) FROM a.b")[0][0] == "a|b|1"
    assert ds.execute(shop.cluster, shop.target, 'SELECT min(v) FROM public."a.b"')[0][0] == "public|a.b|1"
    shop.post_data()

    check = run_module("integrity_check", shop.common_args(mapping))
    assert not check.failed, check.output
    assert set(check.result["tables"]) == set(PLAN_KEYS.values())
    for (schema, name), key in PLAN_KEYS.items():
        src_schema, src_name = RENAMED.get((schema, name), (schema, name))
        assert check.result["tables"][key]["target_rows"] == TABLES[(src_schema, src_name)]

    # Tampering with any one of the look-alike tables in the target fails the check, naming that table only.
    for schema, name in [("public", "a.b"), ("a", "b"), ("a.b", "c"), ("a", "b.c"), ("public", 'we"ird')]:
        table = sql.Identifier(schema, name)
        with contextlib.closing(shop.cluster.connect(shop.target)) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("UPDATE {} SET v = 'tampered' WHERE id = 3 RETURNING v").format(table))
            assert cur.rowcount == 1
        try:
            bad = run_module("integrity_check", shop.common_args(mapping))
            assert bad.failed, (schema, name)
            assert [m["table"] for m in bad.result["mismatches"]] == [PLAN_KEYS[(schema, name)]]
            [diff] = bad.result["mismatches"][0]["first_differing_keys"]
            assert diff == {"key": "(3)", "difference": "changed"}
        finally:
            label = "%s|%s|3" % (schema, name)
            with contextlib.closing(shop.cluster.connect(shop.target)) as conn, conn.cursor() as cur:
                cur.execute(sql.SQL("UPDATE {} SET v = %s WHERE id = 3").format(table), (label,))
    again = run_module("integrity_check", shop.common_args(mapping))
    assert not again.failed, again.output


def test_backup_manifest_counts_each_table(
    carry: t.Tuple[ds.Carry, str], run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    shop, _mapping = carry
    pg = shop.cluster
    backup = run_module("backup", dict(pg.conn(shop.source), dest_dir=str(tmp_path / "backups")))
    assert not backup.failed, backup.output
    manifest = backup.result["manifest"]
    assert manifest["table_keys"] == "qualified-v1"
    counted = {key: manifest["tables"][key]["rows"] for key in MANIFEST_KEYS.values()}
    assert counted == {MANIFEST_KEYS[pair]: _fingerprint(pg, shop.source, *pair)[0] for pair in MANIFEST_KEYS}
    assert len(manifest["tables"]) == len(TABLES)
    # a.b and public."a.b" have their own checksums (the same column types, different rows)
    assert manifest["tables"]["a.b"]["checksum"] != manifest["tables"]['public."a.b"']["checksum"]

    verify = run_module("backup_verify", dict(pg.conn(), manifest_path=backup.result["manifest_path"], level="restore"))
    assert not verify.failed, verify.output
    assert verify.result["verified"] is True and set(verify.result["tables"]) == set(MANIFEST_KEYS.values())

    # A manifest that claims one more row for public."a.b" only (and is sealed again) fails on that table only.
    def edit(doc: t.Dict[str, t.Any]) -> None:
        doc["tables"]['public."a.b"']["rows"] += 1

    bs.reseal(backup.result["manifest_path"], refresh_files=False, edit=edit)
    bad = run_module("backup_verify", dict(pg.conn(), manifest_path=backup.result["manifest_path"], level="restore"))
    assert bad.result["verified"] is False
    assert [m["table"] for m in bad.result["mismatches"]] == ['public."a.b"']


def test_a_manifest_written_with_the_old_keys_still_verifies(pg: t.Any, new_db: t.Any, tmp_path: t.Any) -> None:
    """Manifests from before the quoted keys joined schema and table with a dot; they verify as they did."""
    database = new_db()
    ds.run_sql(
        pg,
        database,
        'CREATE SCHEMA a; CREATE TABLE a.b (id int); CREATE TABLE public."a.b" (id int); '
        'CREATE TABLE public."we""ird" (id int); CREATE TABLE public.orders (id int); '
        'INSERT INTO a.b SELECT generate_series(1, 2); INSERT INTO public."a.b" SELECT generate_series(1, 3); '
        'INSERT INTO public."we""ird" VALUES (1); INSERT INTO public.orders SELECT generate_series(1, 4);',
    )
    result = bs.take(pg, database, str(tmp_path / "old"))
    path = result["manifest_path"]

    def as_before(doc: t.Dict[str, t.Any]) -> None:
        del doc["table_keys"]
        old = {"a.b": "a.b", 'public."a.b"': "public.a.b", 'public."we""ird"': 'public.we"ird'}
        doc["tables"] = {old.get(k, k): v for k, v in doc["tables"].items()}

    bs.reseal(path, refresh_files=False, edit=as_before)
    with open(path) as handle:
        written = json.load(handle)
    assert set(written["tables"]) == {"a.b", "public.a.b", 'public.we"ird', "public.orders"}
    verified = bs.verify(path, "restore", pg)
    assert verified["verified"] is True, verified["mismatches"]
    assert {k: v["rows"] for k, v in verified["tables"].items()} == {
        "a.b": 2,
        'public."a.b"': 3,
        'public."we""ird"': 1,
        "public.orders": 4,
    }

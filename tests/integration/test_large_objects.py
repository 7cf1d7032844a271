"""Large objects are carried by the release and proven on both sides, and the backup counts and checks them (F26).

Production holds large objects referenced from an ``oid`` column: a small one with a comment, one of several pages
(over 1 MB), one owned by another role than the table's owner, one with a GRANT SELECT to another role (and a grant
made by that role), a sparse one (a hole before its data), an empty one and one with an OID above 2^31. Every
assertion about the copy is made with the test's own SQL on the catalogs, never with what the modules report.
"""

from __future__ import annotations

import contextlib
import json
import os
import typing as t
import uuid

import backup_support as bs
import data_support as ds
import pytest
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _large_objects
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect

HIGH_OID = 3000000001
SUFFIX = uuid.uuid4().hex[:6]
OWNER = 'lo owner "%s" 50%%' % SUFFIX  # a hostile role name: a space, a double quote, a percent sign
READER = "lo_reader_%s" % SUFFIX

# what the test's own SQL reads on each side
METADATA = (
    "SELECT oid::bigint, lomowner::regrole::text, lomacl::text, obj_description(oid, 'pg_largeobject') "
    "FROM pg_largeobject_metadata ORDER BY 1"
)
CONTENTS = "SELECT oid::bigint, md5(lo_get(oid)), length(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1"
PAGES = "SELECT loid::bigint, pageno, md5(data) FROM pg_largeobject ORDER BY 1, 2"
REFERENCED = (
    "SELECT d.id, d.title, md5(lo_get(d.body)) FROM documents d "
    "JOIN pg_largeobject_metadata m ON m.oid = d.body ORDER BY d.id"
)


class World(t.NamedTuple):
    carry: ds.Carry
    oids: t.Dict[str, int]


def _make_large_objects(cluster: t.Any, database: str) -> t.Dict[str, int]:
    owner, reader = sql.Identifier(OWNER), sql.Identifier(READER)
    oids: t.Dict[str, int] = {}
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:

        def make(name: str, statement: str, params: t.Sequence[t.Any] = ()) -> int:
            cur.execute(statement, params)
            oids[name] = int(cur.fetchone()[0])
            return oids[name]

        small = make("small", "SELECT lo_from_bytea(0, 'hello, large world'::bytea)")
        cur.execute("COMMENT ON LARGE OBJECT %s IS %s", (small, "the 'small' one: ünïcode"))
        # 1.6 MB of incompressible bytes: about 800 pages
        make(
            "big",
            "SELECT lo_from_bytea(0, decode(string_agg(md5(g::text), '' ORDER BY g), 'hex')) "
            "FROM generate_series(1, 100000) g",
        )
        owned = make("owned", "SELECT lo_from_bytea(0, 'owned by someone else'::bytea)")
        cur.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(owned), owner))
        granted = make("granted", "SELECT lo_from_bytea(0, 'readable by the reader'::bytea)")
        cur.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(granted), owner))
        cur.execute(sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(sql.Literal(granted), reader))
        cur.execute(
            sql.SQL("GRANT UPDATE ON LARGE OBJECT {} TO {} WITH GRANT OPTION").format(sql.Literal(granted), reader)
        )
        # a grant made by the reader (not the owner): its grantor must be kept
        cur.execute(sql.SQL("SET ROLE {}").format(reader))
        cur.execute(sql.SQL("GRANT UPDATE ON LARGE OBJECT {} TO PUBLIC").format(sql.Literal(granted)))
        cur.execute("RESET ROLE")
        sparse = make("sparse", "SELECT lo_create(0)")
        cur.execute("SELECT lo_put(%s, 10000, 'after a hole'::bytea)", (sparse,))
        make("empty", "SELECT lo_create(0)")
        make("high", "SELECT lo_from_bytea(%s, 'an OID above 2^31'::bytea)", (HIGH_OID,))
        cur.execute("COMMENT ON LARGE OBJECT %s IS %s", (HIGH_OID, "high"))
        for i, (name, oid) in enumerate(sorted(oids.items())):
            cur.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)", (i + 1, name, oid))
    return oids


@pytest.fixture(scope="module")
def world(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[World]:
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(OWNER)))
        cur.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(READER)))
    source = ds.shop(pg, 2, 0.05)
    dev = ds.shop(pg, None, 0)
    for database in (source, dev):
        ds.execute(pg, database, "CREATE TABLE documents (id int PRIMARY KEY, title text NOT NULL, body oid)")
    oids = _make_large_objects(pg, source)
    carry = ds.prepare(pg, source, dev, str(tmp_path_factory.mktemp("lo")))
    yield World(carry, oids)
    for name in (carry.target, source, dev):
        ds.drop_db(pg, name)
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        for role in (READER, OWNER):
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _read(carry: ds.Carry, database: str, query: str) -> t.List[t.Tuple[t.Any, ...]]:
    return ds.execute(carry.cluster, database, query)


def _copied(world: World, run_module: t.Callable[..., t.Any]) -> None:
    """data_copy + post-data once per module (the tests below start from a carried target)."""
    carry = world.carry
    if _read(carry, carry.target, "SELECT count(*) FROM pg_largeobject_metadata")[0][0]:
        return
    copy = run_module("data_copy", dict(carry.common_args(), ledger_from=carry.conn("dev")))
    assert not copy.failed, copy.output
    assert copy.result["large_objects"]["count"] == len(world.oids)
    assert copy.result["large_objects"]["bytes"] >= 1600000
    assert copy.result["changed"] is True
    carry.post_data()


def _check(world: World, run_module: t.Callable[..., t.Any]) -> t.Any:
    return run_module("integrity_check", dict(world.carry.common_args(), ledger_from=world.carry.conn("dev")))


def test_check_mode_counts_and_writes_nothing(world: World, run_module: t.Callable[..., t.Any]) -> None:
    carry = world.carry
    if _read(carry, carry.target, "SELECT count(*) FROM pg_largeobject_metadata")[0][0]:
        pytest.fail("run first in the module: the target must still be empty")
    res = run_module("data_copy", dict(carry.common_args(), ledger_from=carry.conn("dev")), check=True)
    assert not res.failed, res.output
    assert res.result["large_objects"] == {"count": len(world.oids)}
    assert _read(carry, carry.target, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]


def test_carried_with_oids_owners_acls_comments_and_bytes(world: World, run_module: t.Callable[..., t.Any]) -> None:
    _copied(world, run_module)
    carry = world.carry
    source_meta = _read(carry, carry.source, METADATA)
    assert len(source_meta) == len(world.oids) and HIGH_OID in {r[0] for r in source_meta}
    assert _read(carry, carry.target, METADATA) == source_meta
    by_oid = {r[0]: r for r in source_meta}
    assert by_oid[world.oids["owned"]][1] == '"%s"' % OWNER.replace('"', '""')
    granted_acl = by_oid[world.oids["granted"]][2]
    assert READER + "=rw*/" in granted_acl and "=w/" + READER in granted_acl  # the reader's own grant to PUBLIC
    assert by_oid[world.oids["small"]][3] == "the 'small' one: ünïcode"
    assert _read(carry, carry.target, CONTENTS) == _read(carry, carry.source, CONTENTS)
    # page by page, holes included: the sparse object keeps its hole
    assert _read(carry, carry.target, PAGES) == _read(carry, carry.source, PAGES)
    big_pages = [r for r in _read(carry, carry.source, PAGES) if r[0] == world.oids["big"]]
    assert len(big_pages) > 700
    # the oid column still resolves, to the same bytes
    assert _read(carry, carry.target, REFERENCED) == _read(carry, carry.source, REFERENCED)
    assert len(_read(carry, carry.target, REFERENCED)) == len(world.oids)

    check = _check(world, run_module)
    assert not check.failed, check.output
    los = check.result["large_objects"]
    assert los["match"] is True and los["source"]["count"] == los["target"]["count"] == len(world.oids)
    assert los["source"]["checksum"] == los["target"]["checksum"]


def test_integrity_check_fails_naming_changed_missing_and_extra(
    world: World, run_module: t.Callable[..., t.Any]
) -> None:
    _copied(world, run_module)
    carry = world.carry
    big, small, owned = world.oids["big"], world.oids["small"], world.oids["owned"]
    tgt = carry.target

    # one byte changed in the middle of the big one
    original = _read(carry, tgt, "SELECT lo_get(%s, 700000, 1)" % big)[0][0]
    ds.execute(carry.cluster, tgt, "SELECT lo_put(%s, 700000, %s)", [big, bytes([bytes(original)[0] ^ 0xFF])])
    try:
        res = _check(world, run_module)
        assert res.failed
        diff = res.result["large_objects"]["differences"]
        assert diff["changed"] == [{"oid": big, "difference": "data or comment"}] and diff["total"] == 1
        assert "large objects differ" in res.result["msg"] and str(big) in res.result["msg"]
    finally:
        ds.execute(carry.cluster, tgt, "SELECT lo_put(%s, 700000, %s)", [big, bytes(original)])

    # an owner changed
    ds.execute(carry.cluster, tgt, "ALTER LARGE OBJECT %s OWNER TO postgres" % owned)
    try:
        res = _check(world, run_module)
        assert res.failed
        assert res.result["large_objects"]["differences"]["changed"] == [{"oid": owned, "difference": "owner or ACL"}]
    finally:
        with contextlib.closing(carry.cluster.connect(tgt)) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(owned), sql.Identifier(OWNER)))

    # one removed, one extra
    data, comment = _read(carry, tgt, "SELECT lo_get(%s), obj_description(%s, 'pg_largeobject')" % (small, small))[0]
    ds.execute(carry.cluster, tgt, "SELECT lo_unlink(%s)" % small)
    extra = ds.execute(carry.cluster, tgt, "SELECT lo_from_bytea(0, 'not in production'::bytea)")[0][0]
    try:
        res = _check(world, run_module)
        assert res.failed
        diff = res.result["large_objects"]["differences"]
        assert diff["missing_in_target"] == [small] and diff["only_in_target"] == [extra] and diff["changed"] == []
        assert "missing in target: %d" % small in res.result["msg"]
    finally:
        ds.execute(carry.cluster, tgt, "SELECT lo_unlink(%s)" % extra)
        ds.execute(carry.cluster, tgt, "SELECT lo_from_bytea(%s, %s)", [small, bytes(data)])
        ds.execute(carry.cluster, tgt, "COMMENT ON LARGE OBJECT %s IS %s", [small, comment])
    res = _check(world, run_module)
    assert not res.failed, res.output


def test_batches_and_cursor_pages_cross_object_boundaries(
    world: World, new_db: t.Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches, fetches and commits: every boundary falls inside or between objects; the target's own large
    objects are replaced."""
    monkeypatch.setattr(_large_objects, "OBJECTS_PER_TRANSACTION", 3)
    monkeypatch.setattr(_large_objects, "FETCH_OBJECTS", 2)
    monkeypatch.setattr(_large_objects, "FETCH_PAGES", 5)
    monkeypatch.setattr(_large_objects, "WRITE_BATCH_BYTES", 5000)
    carry = world.carry
    target = new_db()
    for _attempt in range(4):
        ds.execute(carry.cluster, target, "SELECT lo_from_bytea(0, 'the target had this'::bytea)")
    ds.execute(
        carry.cluster, target, "SELECT lo_from_bytea(%s, 'same OID as production'::bytea)", [world.oids["small"]]
    )
    src_params = ConnParams.from_params(carry.conn("source"))
    with (
        contextlib.closing(connect(src_params)) as src,
        contextlib.closing(connect(src_params.with_database(target))) as tgt,
    ):
        result = _large_objects.copy_large_objects(src, tgt)
        assert result["count"] == len(world.oids) and result["removed_from_target"] == 5
        assert _large_objects.fingerprint(src) == _large_objects.fingerprint(tgt)
    for query in (METADATA, CONTENTS, PAGES):
        assert _read(carry, target, query) == _read(carry, carry.source, query)


def test_backup_records_and_restore_level_checks_large_objects(
    world: World, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    carry = world.carry
    pg = carry.cluster
    backup = run_module(
        "backup", dict(pg.conn(carry.source), dest_dir=str(tmp_path / "b"), format="directory", globals=False)
    )
    assert not backup.failed, backup.output
    manifest = backup.result["manifest"]
    los = manifest["large_objects"]
    assert los["count"] == len(world.oids) and los["algorithm"] == "lo-pages-v1"
    # pg_dump's directory format carries the large objects (blobs*.toc and blob_<oid>.dat files)
    archive = backup.result["path"]
    blob_files = {n.split(".")[0] for n in os.listdir(archive) if n.startswith("blob_")}
    assert blob_files == {"blob_%d" % oid for oid in world.oids.values()}
    assert any(n.startswith("blobs") and n.endswith(".toc") for n in os.listdir(archive))

    manifest_path = backup.result["manifest_path"]
    verify = run_module("backup_verify", dict(pg.conn(), manifest_path=manifest_path, level="restore"))
    assert not verify.failed, verify.output
    assert verify.result["large_objects"]["ok"] is True
    assert verify.result["large_objects"]["actual"]["count"] == len(world.oids)

    # a restore that keeps owners compares owners and ACLs too
    restored = "lo_restored_" + uuid.uuid4().hex[:6]
    restore = run_module("restore", dict(pg.conn(), manifest_path=manifest_path, target_database=restored))
    try:
        assert not restore.failed, restore.output
        assert restore.result["large_objects"]["ok"] is True
        assert restore.result["large_objects"]["owners_and_acls_compared"] is True
        assert _read(carry, restored, METADATA) == _read(carry, carry.source, METADATA)
        assert _read(carry, restored, CONTENTS) == _read(carry, carry.source, CONTENTS)
        # pg_restore writes sequentially: the sparse object's hole comes back as zero pages, stored differently with
        # the same content, which the fingerprint's canonical pages accept
        sparse = world.oids["sparse"]
        restored_pages = [r for r in _read(carry, restored, PAGES) if r[0] == sparse]
        assert restored_pages != [r for r in _read(carry, carry.source, PAGES) if r[0] == sparse]
    finally:
        ds.drop_db(pg, restored)

    with open(manifest_path) as handle:
        pristine = json.load(handle)

    def edit(change: t.Callable[[t.Dict[str, t.Any]], None]) -> None:
        manifest = json.loads(json.dumps(pristine))
        change(manifest)

        def replace(m: t.Dict[str, t.Any]) -> None:
            m.clear()
            m.update(manifest)

        bs.reseal(manifest_path, refresh_files=False, edit=replace)

    for change, words in (
        (lambda m: m["large_objects"].update(count=m["large_objects"]["count"] + 1), "large objects"),
        (lambda m: m["large_objects"].update(content_checksum="12345"), "data or comments differ"),
    ):
        edit(change)
        bad = run_module("backup_verify", dict(pg.conn(), manifest_path=manifest_path, level="restore"))
        assert bad.failed and words in bad.result["msg"], bad.output
        assert bad.result["large_objects"]["ok"] is False

    # a manifest written before large objects were recorded still verifies
    edit(lambda m: m.pop("large_objects"))
    old = run_module("backup_verify", dict(pg.conn(), manifest_path=manifest_path, level="restore"))
    assert not old.failed, old.output
    assert old.result["large_objects"]["ok"] is None


@pytest.fixture
def world_release() -> t.Iterator[t.Any]:
    """A throwaway local world (the conftest's ``world`` fixture is shadowed by this module's own)."""
    import shutil

    import pgworld
    from conftest import _tmp_base

    base = _tmp_base("pgshift-lo-world-")
    release_world = pgworld.World(os.path.join(base, "world"))
    release_world.reset(scale=0.5)
    yield release_world
    release_world.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_release_carries_large_objects(world_release: t.Any, run_playbook: t.Callable[..., t.Any]) -> None:
    """prod_restore.yml end to end: the new production has production's large objects, the previous one keeps its."""
    world = world_release
    prod = world.clusters["prod"]
    role = "lo_release_%s" % SUFFIX
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        cur.execute("SELECT lo_from_bytea(0, decode(repeat('ab', 1500000), 'hex'))")
        big = cur.fetchone()[0]
        cur.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(big), sql.Identifier(role)))
        cur.execute("SELECT lo_from_bytea(0, 'small'::bytea)")
        small = cur.fetchone()[0]
        cur.execute(sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(sql.Literal(small), sql.Identifier(role)))
        cur.execute("COMMENT ON LARGE OBJECT %s IS 'kept'", (small,))
    before = {q: ds.execute(prod, "shop", q) for q in (METADATA, CONTENTS, PAGES)}
    assert len(before[METADATA]) == 2

    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-4000:]
    previous = [r[0] for r in ds.execute(prod, "postgres", "SELECT datname FROM pg_database") if "__prev_" in r[0]]
    assert len(previous) == 1
    for query, rows in before.items():
        assert ds.execute(prod, "shop", query) == rows, query
        assert ds.execute(prod, previous[0], query) == rows, query
    with open(os.path.join(os.path.dirname(world.state), "artifacts", "last-summary.json")) as handle:
        assert int(json.load(handle)["large_objects"]) == 2

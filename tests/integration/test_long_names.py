"""A production database whose name has 63 bytes (PostgreSQL's limit): every name pgshift derives from it (the
rebuilt database, the previous and failed copies, the lock's session name) is shortened with a stable hash, Preflight
reports them, the release and the swap-back after the swap work, and retention finds the shortened previous copies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import typing as t

import pgworld
import pytest
from fault_support import fault_log, fresh, journal_step, output, record, start, wait_for
from psycopg2 import sql
from test_prod_restore import api, checksums, columns, databases

from ansible_collections.pgshift.ops.plugins.module_utils import _release as release

pytestmark = pytest.mark.slow

__all__ = ["fault_log", "fresh"]

LONG = ("shop_production_database_with_a_name_of_sixty_three_bytes_" + "x" * 63)[:63]


@pytest.fixture
def long_world(fresh: pgworld.World) -> t.Iterator[pgworld.World]:
    """The fresh world with production renamed to a 63-byte name, and the shop API pointed at it."""
    world = fresh
    prod = world.clusters["prod"]
    pgworld.service(world, "stop")
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE shop RENAME TO {}").format(sql.Identifier(LONG)))
    path = pgworld.api_config(world)
    with open(path) as handle:
        config = json.load(handle)
    config["database"] = LONG
    with open(path, "w") as handle:
        json.dump(config, handle)
    pgworld.service(world, "start")
    assert pgworld.api_healthy(world.meta["ports"]["api"])
    yield world
    pgworld.service(world, "stop")
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (LONG[:30] + "%",))
        for (name,) in cur.fetchall():
            cur.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT -1").format(sql.Identifier(name)))
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _derived(dbs: t.Dict[str, t.Any]) -> t.List[str]:
    return sorted(name for name in dbs if name != LONG and name.startswith(LONG[:30]))


def test_a_63_byte_production_name_releases_and_swaps_back(long_world: pgworld.World, tmp_path: t.Any) -> None:
    world = long_world
    prod = world.clusters["prod"]
    assert len(LONG.encode()) == 63
    extra = {"pgshift_prod_connection": prod.conn(LONG), "pgshift_keep_previous": 1}
    before = checksums(prod, LONG)

    # 1. the controller dies right after the swap; rollback.yml swaps back (it needs the shortened __failed_ name)
    first = tmp_path / "first"
    first.mkdir()
    proc = start(world, "playbooks/prod_restore.yml", extra, first)
    reached = wait_for(journal_step(world, "swap", "done"), proc)
    assert reached, output(first, "prod_restore.yml")[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
    text = output(first, "prod_restore.yml")
    assert release.next_name(LONG) in text, "Preflight names the shortened rebuilt database"
    rollback = start(world, "playbooks/rollback.yml", extra, tmp_path)
    assert rollback.wait(timeout=300) == 0, output(tmp_path, "rollback.yml")[-3000:]
    dbs = databases(prod)
    assert dbs.get(LONG) == (-1, True), dbs
    assert release.next_name(LONG) not in dbs
    assert not [name for name in _derived(dbs) if release.PREV_INFIX in name], "the previous copy is production again"
    assert "full_name" in columns(prod, LONG, "customers")
    assert checksums(prod, LONG) == before
    with contextlib.closing(prod.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM pgshift.runs ORDER BY started_at")
        assert [r[0] for r in cur.fetchall()] == ["rolled_back"]
        cur.execute("SELECT detail FROM pgshift.steps WHERE step = 'swap' ORDER BY id")
        swap_done, swap_undone = [r[0] for r in cur.fetchall()]
    assert swap_done["next"] == release.next_name(LONG)
    assert swap_done["previous"].startswith(release.prev_stem(LONG) + release.PREV_INFIX)
    assert len(swap_undone["failed_copy"].encode()) <= 63
    assert swap_undone["failed_copy"].startswith(release.failed_stem(LONG) + release.FAILED_INFIX)
    assert api(world, "/health")[0] == 200

    # 2. a full release; retention finds the shortened previous copies (an older one is removed, one kept)
    older = release.prev_stem(LONG) + release.PREV_INFIX + "20000101000000"
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(older)))
    second = tmp_path / "second"
    second.mkdir()
    proc = start(world, "playbooks/prod_restore.yml", extra, second)
    assert proc.wait(timeout=600) == 0, output(second, "prod_restore.yml")[-4000:]
    dbs = databases(prod)
    assert dbs.get(LONG) == (-1, True), dbs
    assert "display_name" in columns(prod, LONG, "customers")
    assert checksums(prod, LONG, renames={"customers": {"full_name": "display_name"}}) == before
    assert older not in dbs, "retention must find the shortened previous copies"
    kept = [name for name in _derived(dbs) if name.startswith(release.prev_stem(LONG) + release.PREV_INFIX)]
    assert len(kept) == 1 and all(len(name.encode()) <= 63 for name in kept), dbs
    assert checksums(prod, kept[0]) == before
    assert release.next_name(LONG) not in dbs
    status, body = api(world, "/health")
    assert status == 200 and body["schema_version"] == "1700000005000_rename-full-name"
    record("63-byte production name", "swap, swap-back", "released", "derived names shortened, found again")

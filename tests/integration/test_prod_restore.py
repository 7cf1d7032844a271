"""prod_restore.yml end to end on a throwaway local world (real clusters, real ansible-playbook, real API).

Each test resets the world (prod: old schema with the shop's rows; dev: every migration, no rows) and takes the
content checksums of production before the run, so "production intact" is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import typing as t
import urllib.request

import pgworld
import pytest
from psycopg2 import sql

pytestmark = pytest.mark.slow

TABLES = ["customers", "products", "orders", "order_lines", "order_events", "pgmigrations"]


def checksums(
    cluster: pgworld.Cluster, database: str, renames: t.Optional[t.Dict[str, t.Dict[str, str]]] = None
) -> t.Dict[str, t.Any]:
    """count(*) and an order-independent content checksum per table, over the columns both schemas share."""
    out: t.Dict[str, t.Any] = {}
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3")
        for table in TABLES[:-1]:
            columns = PROD_COLUMNS[table]
            if renames and table in renames:
                columns = [renames[table].get(c, c) for c in columns]
            cur.execute(
                sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(ROW({})::text, 0)), 0) FROM {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table)
                )
            )
            out[table] = list(cur.fetchone())
    return out


PROD_COLUMNS = {
    "customers": ["id", "email", "full_name", "created_at", "updated_at", "profile"],
    "products": ["id", "sku", "name", "price_cents", "tags"],
    "orders": ["id", "customer_id", "status", "placed_at", "note"],
    "order_lines": ["order_id", "line_no", "product_id", "quantity", "unit_price_cents"],
    "order_events": ["id", "order_id", "kind", "created_at", "payload"],
}


def databases(cluster: pgworld.Cluster) -> t.Dict[str, t.Tuple[int, bool]]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname, datconnlimit, datallowconn FROM pg_database")
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def closed_to_applications(cluster: pgworld.Cluster, database: str) -> bool:
    """The application role cannot connect: connection limit 0 (superuser profile) or no CONNECT privilege (managed
    profile, where the pipeline's role obeys connection limits too)."""
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datconnlimit = 0 OR NOT has_database_privilege(%s, oid, 'CONNECT') FROM pg_database "
            "WHERE datname = %s",
            (pgworld.APP_ROLE, database),
        )
        return bool(cur.fetchone()[0])


def ledger(cluster: pgworld.Cluster, database: str) -> t.List[str]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM pgmigrations ORDER BY run_on, id")
        return [r[0] for r in cur.fetchall()]


def columns(cluster: pgworld.Cluster, database: str, table: str) -> t.List[str]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def api(world: pgworld.World, path: str) -> t.Tuple[int, t.Any]:
    url = "http://127.0.0.1:%d%s" % (world.meta["ports"]["api"], path)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def journal_runs(cluster: pgworld.Cluster) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs ORDER BY started_at")
        return [(r[0], r[1]) for r in cur.fetchall()]


def assert_production_intact(world: pgworld.World, before: t.Dict[str, t.Any]) -> None:
    prod = world.clusters["prod"]
    dbs = databases(prod)
    assert dbs["shop"] == (-1, True), "production must accept connections with its old limit"
    assert not [d for d in dbs if d.startswith("shop__next")]
    # a new database that served after a swap is kept by a swap-back (never dropped), closed to applications
    assert all(closed_to_applications(prod, d) for d in dbs if d.startswith("shop__failed_")), dbs
    assert checksums(prod, "shop") == before, "production content changed"
    assert "full_name" in columns(prod, "shop", "customers"), "production must still have its old schema"
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag")), "maintenance left on"
    status, body = api(world, "/health")
    assert status == 200 and body["schema_version"] == "1700000001000_order-events"
    status, body = api(world, "/customers/7")
    assert status == 200 and body["full_name"].startswith("Customer 7")


@pytest.fixture
def fresh(world: pgworld.World) -> pgworld.World:
    world.reset(scale=0.5)
    return world


def test_release_end_to_end(fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]) -> None:
    world = fresh
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    before = checksums(prod, "shop")
    work = os.path.join(world.state, "backups", "work")
    stale = os.path.join(work, "pgshift-build-20200101T000000Z-abcdef-old1")  # left by an earlier, finished run
    os.makedirs(stale)
    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-4000:]
    said = " ".join(run.output.split())
    assert "backups already in %s: 0 of shop taking 0.0 MB" % os.path.join(world.state, "backups") in said
    assert "retention keeps the newest 5, those younger than 14 days and the newest verified one" in said
    # the previous copy stays closed to applications (connection limit 0), as README.md says
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datconnlimit FROM pg_database WHERE datname LIKE 'shop\\_\\_prev\\_%'")
        assert [r[0] for r in cur.fetchall()] == [0]
    # the run's own work folder (its name carries the run id) and the finished run's are gone
    assert [n for n in os.listdir(work) if n.startswith("pgshift-build-")] == []

    # production has the dev schema
    assert columns(prod, "shop", "customers") == columns(dev, "shop", "customers")
    assert "display_name" in columns(prod, "shop", "customers")
    assert columns(prod, "shop", "product_reviews"), "the new table is there"
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE indexname = 'orders_customer_placed_idx'")
        assert cur.fetchone(), "the new index is there"
        cur.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_constraint WHERE NOT convalidated")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT loyalty_points, marketing_opt_in FROM customers WHERE id = 7")
        assert cur.fetchone() == (0, False), "new columns got their defaults"
        cur.execute("SELECT nextval('customers_id_seq') > (SELECT max(id) FROM customers)")
        assert cur.fetchone()[0], "sequences are past the carried keys"

    # every carried row is there, with its content (the renamed column through the mapping)
    after = checksums(prod, "shop", renames={"customers": {"full_name": "display_name"}})
    assert after == before

    # the previous production is kept, untouched, and refuses application connections
    previous = [d for d in databases(prod) if d.startswith("shop__prev_")]
    assert len(previous) == 1
    assert checksums(prod, previous[0]) == before
    assert databases(prod)["shop"] == (-1, True)

    # the ledger lists exactly the migrations the dev schema came from
    assert ledger(prod, "shop") == ledger(dev, "shop")

    # the API answers from the new schema; maintenance is off
    status, body = api(world, "/health")
    assert status == 200 and body["schema_version"] == ledger(dev, "shop")[-1] and body["maintenance"] is False
    status, body = api(world, "/customers/7")
    assert status == 200 and body["display_name"].startswith("Customer 7") and "full_name" not in body
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag"))

    # the journal closed the run
    assert journal_runs(prod)[-1][1] == "succeeded"


def test_failure_in_the_middle_leaves_production_as_it_was(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    """The rebuild fails after maintenance is on and connections are blocked: everything is put back."""
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    blocker = os.path.join(world.state, "not-a-folder")
    with open(blocker, "w") as handle:
        handle.write("a file where the work folder should be\n")
    reports = os.path.join(os.path.dirname(world.state), "reports")
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars={"pgshift_work_dir": os.path.join(blocker, "work")},
        args=["-vvvv"],
        env={"PGSHIFT_WORLD": world.state, "PGSHIFT_REPORT_DIR": reports},
    )
    assert run.rc != 0
    assert "The rebuild failed" in run.output and "Production was left as it was" in run.output
    assert_production_intact(world, before)
    assert journal_runs(world.clusters["prod"])[-1][1] == "rolled_back"
    # no password at -vvvv on a failing run: not in the output, not in the journal, not in the run report
    secrets = [world.meta["password"], world.meta["app_password"]]
    assert not [p for p in secrets if p in run.output]
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(string_agg(r::text, ''), '') FROM pgshift.runs r")
        journal_text = cur.fetchone()[0]
        cur.execute("SELECT coalesce(string_agg(s::text, ''), '') FROM pgshift.steps s")
        journal_text += cur.fetchone()[0]
    assert "rolled_back" in journal_text and not [p for p in secrets if p in journal_text]
    written = []
    for folder, _dirs, files in os.walk(reports):
        for name in files:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as handle:
                written.append(handle.read())
    assert written, "the run report was written"
    assert not [p for p in secrets for text in written if p in text]


def test_failed_api_check_after_the_swap_swaps_back(fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    bad_checks = [
        {
            "name": "an answer the new release does not give",
            "url": "http://127.0.0.1:%d/health" % world.meta["ports"]["api"],
            "json_path": "schema_version",
            "expect": "no-such-migration",
        }
    ]
    run = run_playbook(
        "playbooks/prod_restore.yml", extra_vars={"pgshift_api_checks": bad_checks}, env={"PGSHIFT_WORLD": world.state}
    )
    assert run.rc != 0
    assert "production was swapped back" in run.output
    assert_production_intact(world, before)
    # the previous database is production again: no __prev_ copy is left behind by the failed run; the new database,
    # which served after the swap, is kept (test_swap_back_carry.py proves the writes made there are carried back)
    assert not [d for d in databases(world.clusters["prod"]) if d.startswith("shop__prev_")]
    assert len([d for d in databases(world.clusters["prod"]) if d.startswith("shop__failed_")]) == 1
    assert journal_runs(world.clusters["prod"])[-1][1] == "rolled_back"
    # the rolled-back run's work folder went with it
    work = os.path.join(world.state, "backups", "work")
    assert [n for n in os.listdir(work) if n.startswith("pgshift-build-")] == []


def test_rollback_is_idempotent(fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    for _attempt in range(2):
        run = run_playbook("playbooks/rollback.yml", env={"PGSHIFT_WORLD": world.state})
        assert run.rc == 0, run.output[-3000:]
        assert "nothing to undo" in run.output or "no unfinished run" in run.output
    assert_production_intact(world, before)


@pytest.mark.parametrize(
    "case",
    [
        "no_confirmation",
        "wrong_confirmation",
        "wrong_password",
        "unreachable",
        "missing_database",
        "bad_dev_schema",
        "malformed_api_checks",
    ],
)
def test_bad_input_stops_before_any_change(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any], case: str
) -> None:
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    secret = world.meta["password"]
    conn = {
        "host": "127.0.0.1",
        "port": prod.port,
        "user": "postgres",
        "password": secret,
        "database": "shop",
        "sslmode": "disable",
    }
    extra: t.Dict[str, t.Any] = {}
    expected = ""
    if case == "no_confirmation":
        extra = {"pgshift_environment": "production"}
        expected = "Confirm by passing -e pgshift_confirm=shop"
    elif case == "wrong_confirmation":
        extra = {"pgshift_environment": "production", "pgshift_confirm": "shop_staging"}
        expected = "Confirm by passing -e pgshift_confirm=shop"
    elif case == "wrong_password":
        extra = {"pgshift_prod_connection": dict(conn, password="not-the-password-" + secret[:3])}
        expected = "check the password"
    elif case == "unreachable":
        extra = {"pgshift_prod_connection": dict(conn, port=pgworld.free_port())}
        expected = "check that PostgreSQL runs"
    elif case == "missing_database":
        extra = {"pgshift_prod_connection": dict(conn, database="no_such_shop")}
        expected = "does not exist"
    elif case == "malformed_api_checks":
        extra = {"pgshift_api_checks": [{"name": "no url", "expect": "ok"}]}
        expected = "pgshift_api_checks must be a list of checks"
    elif case == "bad_dev_schema":
        # dev's schema needs a role production's cluster does not have
        with contextlib.closing(world.clusters["dev"].connect("shop")) as dconn, dconn.cursor() as cur:
            cur.execute("CREATE ROLE reporting_only")
            cur.execute("GRANT SELECT ON customers TO reporting_only")
        expected = "missing on the production cluster: reporting_only"
    run = run_playbook(
        "playbooks/prod_restore.yml", extra_vars=extra, args=["-vvvv"], env={"PGSHIFT_WORLD": world.state}
    )
    assert run.rc != 0
    assert expected in run.output, run.output[-3000:]
    assert secret not in run.output, "the password leaked into the output"
    assert "not-the-password-" not in run.output, "the wrong password leaked into the output"
    assert checksums(prod, "shop") == before
    dbs = databases(prod)
    assert dbs["shop"] == (-1, True) and "shop__next" not in dbs
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag"))
    if case == "bad_dev_schema":
        with contextlib.closing(world.clusters["dev"].connect("shop")) as dconn, dconn.cursor() as cur:
            cur.execute("REVOKE SELECT ON customers FROM reporting_only")
            cur.execute("DROP ROLE reporting_only")


def test_check_diff_changes_nothing_and_shows_the_plan(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    backups_before = sorted(os.listdir(os.path.join(world.state, "backups")))
    run = run_playbook("playbooks/prod_restore.yml", args=["--check", "--diff"], env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-4000:]
    assert "migrations the release brings: 1700000002000_customer-loyalty" in run.output
    assert "shop__next" in run.output, "the plan names the database it would build"
    assert_production_intact(world, before)
    assert "pgshift" not in databases(prod), "check mode must not even create the journal"
    assert sorted(os.listdir(os.path.join(world.state, "backups"))) == backups_before

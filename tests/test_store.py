"""The run store: writing, reading, versions, bad files, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layertime.errors import LayertimeError
from layertime.store import _V1, APPLICATION_ID, SCHEMA_VERSION, Store, config_key


def test_add_get_list_newest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as s:
        a = s.add("profile", model="alexnet", config={"b": 1}, result={"x": 1}, batch_size=1)
        b = s.add("cost", model="vgg16", config={"b": 2}, batch_size=2, device="cpu")
        assert [r.id for r in s.list()] == [b, a]
        got = s.get(a)
        assert got.result == {"x": 1} and got.config == {"b": 1} and got.status == "ok"
        assert got.config_key == config_key({"b": 1})
        assert s.find_ok(config_key({"b": 1})).id == a  # type: ignore[union-attr]
        assert [r.id for r in s.list(kind="cost")] == [b]
        summary = s.get(b).summary()
        for key in ("id", "kind", "model", "batch_size", "device", "status", "created"):
            assert key in summary


def test_failed_runs_are_not_reused(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as s:
        s.add("profile", model="m", config={"b": 4}, status="failed", error="out of memory")
        assert s.find_ok(config_key({"b": 4})) is None


def test_unknown_id_is_a_clear_error(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as s:
        with pytest.raises(LayertimeError, match="no run 42"):
            s.get(42)


def test_config_key_ignores_order() -> None:
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_not_a_database_is_left_untouched(tmp_path: Path) -> None:
    p = tmp_path / "notes.db"
    p.write_bytes(b"these are my notes, not a database\n" * 200)
    before = p.read_bytes()
    with pytest.raises(LayertimeError, match="not a layertime database"):
        Store(p)
    assert p.read_bytes() == before


def test_other_sqlite_database_is_left_untouched(tmp_path: Path) -> None:
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE invoices (n INTEGER)")
    con.commit()
    con.close()
    before = p.read_bytes()
    with pytest.raises(LayertimeError, match="not a layertime database"):
        Store(p)
    assert p.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "new.db"
    Store(p).close()
    con = sqlite3.connect(p)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(LayertimeError, match="newer layertime"):
        Store(p)
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    con.close()


def test_version_1_database_opens_after_upgrade(tmp_path: Path) -> None:
    p = tmp_path / "v1.db"
    con = sqlite3.connect(p)
    con.executescript(_V1)
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.execute("PRAGMA user_version=1")
    con.execute(
        "INSERT INTO runs (kind, model, batch_size, device, status, created, config_json,"
        " result_json, error) VALUES ('profile', 'alexnet', 8, 'cpu', 'ok',"
        " '2025-01-01T00:00:00+00:00', '{\"b\": 8}', '{\"step_s\": 0.5}', NULL)"
    )
    con.commit()
    con.close()
    with Store(p) as s:
        old = s.get(1)
        assert old.model == "alexnet" and old.result == {"step_s": 0.5}
        assert old.sweep_id is None and old.config_key is None
        new = s.add("profile", model="vgg16", config={"b": 1}, sweep_id=7)
        assert s.get(new).sweep_id == 7
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


@pytest.mark.slow
def test_two_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    p = tmp_path / "shared.db"
    Store(p).close()
    writer = textwrap.dedent(
        f"""
        import sys
        from layertime.store import Store
        tag = sys.argv[1]
        with Store({str(p)!r}) as s:
            for i in range(40):
                s.add("profile", model=tag, config={{"tag": tag, "i": i}}, result={{"i": i}})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, tag]) for tag in ("left", "right")
    ]
    assert [pr.wait(timeout=120) for pr in procs] == [0, 0]
    with Store(p) as s:
        runs = s.list()
    assert len(runs) == 80
    assert sorted(r.model for r in runs).count("left") == 40
    assert len({r.id for r in runs}) == 80

"""The sweep store: cells are claimed (two sweeps split the work), claims of dead sweeps are taken
over, stored cells are never claimed again, and a report never writes to its input."""

import hashlib
import socket
import sqlite3

import pytest

from jaxrepair import sweep


def _claim_as(path, owner: str, hashes):
    db = sqlite3.connect(path)
    db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, strftime('%s','now'))", [(h, owner) for h in hashes])
    db.commit()
    db.close()


def test_claims_split_cells_between_sweeps(tmp_path):
    path = tmp_path / "s.sqlite"
    st = sweep.Store(path)
    host = socket.gethostname()
    _claim_as(path, f"{host}:1", ["a", "b"])  # pid 1 is alive: another sweep holds these
    _claim_as(path, f"{host}:999999999", ["c"])  # no such process: its claim is stale
    _claim_as(path, "elsewhere:42", ["d"])  # another host, fresh: held
    mine = st.claim(["a", "b", "c", "d", "e"])
    assert mine == {"c", "e"}
    st.add([{"hash": "e", "config": {}, "metrics": {"x": float("nan")}, "timings": {}, "versions": {}, "created": 0.0}])
    assert st.claim(["e"]) == set()  # stored: never run again
    assert st.done() == {"e"} and st.records()[0]["metrics"] == {"x": None}  # strict JSON in the store
    st.release()
    left = {h for (h,) in sqlite3.connect(path).execute("SELECT hash FROM claims")}
    assert left == {"a", "b", "d"}  # only this sweep's claims were released
    st.close()


def test_report_opens_read_only_and_refuses_other_files(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="not a jaxrepair sweep store"):
        sweep.report(other, tmp_path / "r")
    with pytest.raises(ValueError, match="other tables"):
        sweep.Store(other)  # nor is it turned into a store for writing
    assert hashlib.sha256(other.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("other.sqlite-*"))

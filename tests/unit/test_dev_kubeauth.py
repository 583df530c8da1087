"""The dev API server's token file, as kube-apiserver's --token-auth-file reads it."""

from __future__ import annotations

from pathlib import Path

from virtrigaud.dev import kubeauth


def test_token_file_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    rows = [("t1", "alice", "u1", ("a", "b")), ("t2", "system:serviceaccount:x:y", "u2", ())]
    kubeauth.write_token_file(path, rows)
    assert path.read_text() == 't1,alice,u1,"a,b"\nt2,system:serviceaccount:x:y,u2,\n'
    assert kubeauth.read_token_file(path) == rows
    assert path.stat().st_mode & 0o777 == 0o600

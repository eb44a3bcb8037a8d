"""docs/profiles.md's generated reference and `vigie profile check`'s summary."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.probes.snmp.profiles.build import MINIMAL, write_profile
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, load_profile_dirs
from vigie.probes.snmp.profiles.docs import check_profile_command, profiles_markdown

DOCS = Path(__file__).parents[4] / "docs" / "profiles.md"
BEGIN, END = "<!-- BEGIN GENERATED: profiles -->\n", "<!-- END GENERATED: profiles -->\n"


def test_profiles_doc_is_in_sync() -> None:
    """docs/profiles.md carries the reference generated from the shipped profiles."""
    text = DOCS.read_text()
    generated = profiles_markdown(load_profile_dirs([SHIPPED_PROFILE_DIR]))
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if os.environ.get("VIGIE_UPDATE_GOLDEN"):
        DOCS.write_text(head + BEGIN + generated + END + tail)
        return
    assert BEGIN in text and END in text
    assert rest.partition(END)[0] == generated, "regenerate: VIGIE_UPDATE_GOLDEN=1 pytest"


def test_check_profile_command_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie profile check` prints each error with its place and exits 1; OK files exit 0."""
    bad = write_profile(tmp_path, "bad", "source: s\nmetrics:\n  - {name: g, oid: x}\n")
    assert check_profile_command(bad) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:5: metrics[0].help: required field is missing" in err
    assert re.search(rf"{re.escape(str(bad))}:3:\d+: metrics\[0\]\.oid: String should match", err)
    assert "error(s) in" in err
    good = write_profile(tmp_path, "good", MINIMAL)
    assert check_profile_command(good) == 0
    assert "OK, 1 metric families" in capsys.readouterr().out


def test_check_profile_command_names_the_required_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vigie profile check` says which objects a poll cannot do without."""
    assert check_profile_command(SHIPPED_PROFILE_DIR / "ups-mib.yaml") == 0
    out = capsys.readouterr().out
    assert "2 required objects (ups_battery_status, ups_output_source)" in out

"""Shipped files are found in a checkout and in a non-editable install's share/vigie."""

from __future__ import annotations

from pathlib import Path

from vigie.core.shipped import CHECKOUT_CONFIG, shipped


def test_checkout_files_come_first() -> None:
    """In a checkout, profiles and the demo config are the repository's own."""
    assert shipped("profiles") == CHECKOUT_CONFIG / "profiles"
    assert (shipped("profiles") / "ups-mib.yaml").is_file()
    assert shipped("demo.yaml").is_file()


def test_installed_copy_is_used_outside_a_checkout(tmp_path: Path) -> None:
    """A file the checkout lacks is looked up under <prefix>/share/vigie, where pip puts it."""
    assert shipped("no-such-file.yaml", prefix=tmp_path) == (
        tmp_path / "share" / "vigie" / "no-such-file.yaml"
    )

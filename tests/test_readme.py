"""The README's first lines and its configuration example stay true."""

from __future__ import annotations

from pathlib import Path

from vigie.monitor.config import load_config
from vigie.probes import default_registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_give_the_two_commands() -> None:
    """A newcomer sees `make demo` and `make test` before anything else."""
    head = README.splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_configuration_example_loads(tmp_path: Path) -> None:
    """The README's example config is valid once its secret files exist (paths moved to tmp)."""
    block = README.split("## Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    for name in ("ups-community", "bmc", "chu-root.pem"):
        (tmp_path / name).write_text("not-a-real-secret\n")
    text = (
        block.replace("/etc/vigie/secrets/", f"{tmp_path}/")
        .replace("/etc/vigie/ca/", f"{tmp_path}/")
        .replace("/var/lib/vigie", str(tmp_path / "state"))
    )
    path = tmp_path / "vigie.yaml"
    path.write_text(text)
    loaded = load_config(path, default_registry(), env={})
    assert {c.kind for c in loaded.plan.values()} == {"http", "snmp", "redfish"}
    assert [c.id for c in loaded.config.components if c.kind == "application"] == ["dpi"]
    # Checks without a site label count in the site of the component they feed.
    assert loaded.sites() == {"bellevue": 1, "nord-salle-1": 6}

"""The README stays true: its configuration table is the one shared/config/ documents."""

from pathlib import Path

from scripts.config_table import refreshed

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert refreshed(readme) == readme, "run: python scripts/config_table.py --write"


def test_readme_gives_the_two_setup_commands_and_ci_uses_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()

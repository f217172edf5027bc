"""The README's install and test commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = 'pip install torch==2.13.0 && pip install -e ".[test,wandb]"'
    test = "python -m pytest -q"
    assert f"```bash\n{install}\n```" in readme and f"```bash\n{test}\n```" in readme
    assert f"{install} || exit 1" in ci and f'\n{test} -m ""\n' in ci  # CI: the default run and the slow tests
    assert f'`{test} -m ""`' in readme


def test_the_default_run_leaves_out_only_the_slow_tests():
    ini = (ROOT / "pytest.ini").read_text()
    assert 'addopts = -m "not slow"' in ini and "slow:" in ini


def test_ci_lints_and_format_checks_after_the_tests():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    lint = ("ruff check .", "ruff format --check .")
    assert all(f"`{cmd}`" in readme and f"\n{cmd} ||" in ci for cmd in lint)
    assert ci.index("python -m pytest -q") < ci.index(lint[0]) < ci.index(lint[1])
    assert "ruff>=" in (ROOT / "setup.py").read_text().split('"test":', 1)[1].split("]", 1)[0]

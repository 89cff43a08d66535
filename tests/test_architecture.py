"""The walls between the rooms (ARCHITECTURE.md), read from the source with `ast`, and
the start-up rule: the submit/status path never imports httpx, rich, asyncio or pydantic."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.helpers.cli import cli_env
from tests.helpers.processes import run_python

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ollama_cli"
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    """Whether a dotted name under the package is a module (file or package folder)."""
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Every module `path` imports, resolved to dotted names: `from a import b` gives
    `a.b` when b is a module of ours, else `a`; relative imports are made absolute.
    `module_level_only` leaves out imports inside functions (those run lazily) and
    under `if TYPE_CHECKING:` (those never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, lazy: bool) -> None:
        if module_level_only and (lazy or _type_checking_block(node)):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if source.startswith("ollama_cli") and _is_module(candidate)
                          else source)
        for child in ast.iter_child_nodes(node):
            visit(child, lazy or isinstance(node, FUNCTIONS))

    visit(tree, False)
    return found


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n == "ollama_cli" or n.startswith("ollama_cli.")}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_import_reader_sees_imports() -> None:
    # The walls below pass trivially if the reader finds nothing: check it does.
    assert "ollama_cli.errors" in imports(PACKAGE / "store" / "lmdb.py")
    assert "lmdb" in imports(PACKAGE / "store" / "lmdb.py", module_level_only=True)
    assert "ollama_cli.cli.app" in imports(PACKAGE / "cli" / "__init__.py")
    assert "ollama_cli.cli.app" not in imports(PACKAGE / "cli" / "__init__.py", module_level_only=True)
    assert "httpx" in imports(PACKAGE / "clients" / "base.py", module_level_only=True)
    assert "ollama_cli.timefmt" in imports(PACKAGE / "jobs.py")


def test_only_the_cli_imports_the_cli() -> None:
    offenders = {
        module_name(p): sorted(n for n in imports(p) if n == "ollama_cli.cli" or n.startswith("ollama_cli.cli."))
        for p in sources()
        if PACKAGE / "cli" not in p.parents and p.name != "__main__.py"
    }
    assert {m: n for m, n in offenders.items() if n} == {}


def test_no_test_module_imports_another() -> None:
    # What tests share is in tests/helpers/, and conftest.py holds only fixtures: editing one
    # test module must not break another.
    def test_module(name: str) -> bool:
        return name.startswith("tests.") and name.rpartition(".")[2].startswith(("test_", "conftest"))

    found = {module_name(p): sorted(n for n in imports(p) if test_module(n)) for p in (ROOT / "tests").rglob("*.py")}
    assert {m: n for m, n in found.items() if n} == {}
    assert "tests.helpers.cli" in imports(ROOT / "tests" / "test_bad_input.py")  # the reader sees them


BASE = {"ollama_cli", "ollama_cli.errors"}
ENGINES = ("ollama_cli.store.lmdb", "ollama_cli.store.lmdb_engine", "ollama_cli.store.flock",
           "ollama_cli.store.postgres")


def store_module(name: str) -> bool:
    return name == "ollama_cli.store" or name.startswith("ollama_cli.store.")


@pytest.mark.parametrize("path", [p for p in sources() if p.parent == PACKAGE / "store" and p.name != "lmdb_engine.py"],
                         ids=lambda p: p.name)
def test_the_store_imports_only_errors_and_itself(path: Path) -> None:
    # The interface and its records also name the job record they carry (buckets.py: what a
    # finished job adds to the statistics, which both engines keep).
    allowed = BASE | ({"ollama_cli.jobs"} if path.name in ("base.py", "records.py", "buckets.py") else set())
    assert {n for n in ours(imports(path)) if not store_module(n)} - allowed == set()


def test_the_lmdb_engine_is_where_the_queue_meets_lmdb() -> None:
    # The one store module above the key-value layer: it runs the queue's functions on it.
    found = ours(imports(PACKAGE / "store" / "lmdb_engine.py"))
    assert {"ollama_cli.queue", "ollama_cli.store.lmdb", "ollama_cli.store.flock"} <= found
    queue = {n for n in found if n == "ollama_cli.queue" or n.startswith("ollama_cli.queue.")}
    assert {n for n in found if not store_module(n)} - queue <= BASE | {
        "ollama_cli.cache", "ollama_cli.cache.entries", "ollama_cli.cache.semantic", "ollama_cli.codec",
        "ollama_cli.jobs"}


def test_the_postgresql_engine_stands_beside_lmdb_not_on_it() -> None:
    # Its own SQL, not the queue's functions over LMDB's key-value layer: what it shares is
    # the records, the codec, the cache's key, the semantic cache's scope and arithmetic and the
    # statistics' buckets; the driver is imported in functions only.
    found = {module_name(p): imports(p) for p in (PACKAGE / "store" / "postgres").glob("*.py")}
    ours_found = {n for names in found.values() for n in ours(names) if not n.startswith("ollama_cli.store.postgres")}
    assert ours_found <= BASE | {"ollama_cli.jobs", "ollama_cli.codec", "ollama_cli.cache", "ollama_cli.cache.semantic",
                                 "ollama_cli.store.records", "ollama_cli.store.buckets"}
    assert {m for m, names in found.items() if any(n.startswith(("lmdb", *ENGINES[:3])) for n in names)} == set()
    level = {m for p in (PACKAGE / "store" / "postgres").glob("*.py")
             for m in imports(p, module_level_only=True) if m.startswith("psycopg")}
    assert level == set()
    # Only open_store (and `shown`, for messages) reach it, and only for a postgresql:// URL.
    importers = {module_name(p) for p in sources() if PACKAGE / "store" / "postgres" not in p.parents
                 and any(n.startswith("ollama_cli.store.postgres") for n in imports(p))}
    assert importers == {"ollama_cli.store"}


def test_the_queue_and_the_cache_know_the_store_only_by_its_interface() -> None:
    rooms = [p for p in sources() if p.parent in (PACKAGE / "queue", PACKAGE / "cache")]
    found = {module_name(p): imports(p) for p in rooms}
    assert {m: sorted(n for n in names if n.startswith(ENGINES) or n == "lmdb")
            for m, names in found.items() if any(n.startswith(ENGINES) or n == "lmdb" for n in names)} == {}
    assert all("ollama_cli.store.base" in found[m] for m in ("ollama_cli.queue.indexes", "ollama_cli.cache"))


def test_nothing_above_the_store_imports_an_engine() -> None:
    # The CLI, the daemon, batches, insight and follow open the store with store.open_store
    # and speak to it through store.base: a second engine changes none of them.
    above = [p for p in sources() if PACKAGE / "store" not in p.parents]
    offenders = {module_name(p): sorted(n for n in imports(p) if n.startswith(ENGINES) or n == "lmdb")
                 for p in above}
    assert {m: n for m, n in offenders.items() if n} == {}
    assert any("ollama_cli.store" in imports(p) for p in above)  # the reader sees the lazy open_store


@pytest.mark.parametrize(("module", "allowed"), [
    ("jobs.py", {"ollama_cli", "ollama_cli.errors", "ollama_cli.timefmt"}),
    ("codec.py", {"ollama_cli", "ollama_cli.errors", "ollama_cli.jobs"}),
    ("wire/openai.py", {"ollama_cli", "ollama_cli.errors", "ollama_cli.jobs"}),  # pure: shapes only
])
def test_low_rooms_import_only_what_is_below_them(module: str, allowed: set[str]) -> None:
    assert ours(imports(PACKAGE / module)) - allowed == set()


def test_render_never_imports_the_store_the_queue_or_the_backends() -> None:
    banned = ("ollama_cli.store", "ollama_cli.queue", "ollama_cli.clients", "ollama_cli.daemon", "lmdb", "httpx")
    modules = sorted((PACKAGE / "render").glob("*.py"))
    assert len(modules) >= 2  # the package, and the views of insight
    assert {n for p in modules for n in imports(p) if n.startswith(banned)} == set()


def test_only_the_network_rooms_import_httpx_at_module_level() -> None:
    users = {module_name(p) for p in sources()
             if any(n == "httpx" or n.startswith("httpx.") for n in imports(p, module_level_only=True))}
    assert {u for u in users if not u.startswith(("ollama_cli.clients", "ollama_cli.daemon"))} == set()


def test_only_the_daemons_metrics_import_prometheus_client() -> None:
    # The daemon imports daemon/metrics.py only when --metrics-addr is given.
    users = {module_name(p) for p in sources() if any(n.split(".")[0] == "prometheus_client" for n in imports(p))}
    assert users == {"ollama_cli.daemon.metrics"}
    assert "ollama_cli.daemon.metrics" not in imports(PACKAGE / "daemon" / "loop.py", module_level_only=True)


def test_only_the_settings_read_the_environment() -> None:
    # Click, under Typer, reads its own completion variables: not ours to route.
    def reads_environment(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                return True
            if isinstance(node, ast.ImportFrom) and node.module == "os" \
                    and {a.name for a in node.names} & {"environ", "getenv"}:
                return True
        return False

    readers = {module_name(p) for p in sources() if reads_environment(p)}
    assert "ollama_cli.settings" in readers and {r for r in readers if not r.startswith("ollama_cli.settings")} == set()


# ------------------------------------------------------------------ start-up path

# Runs the real entry point and writes the loaded modules to a file at exit (stdout
# stays the command's own JSON).
WRAPPER = """
    import atexit, json, sys
    out = sys.argv[1]
    def dump() -> None:
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
    atexit.register(dump)
    from ollama_cli.cli import main
    main(sys.argv[2:])
"""
# The PostgreSQL driver too: a store in LMDB must not pay for the other engine.
HEAVY = ("httpx", "rich", "asyncio", "pydantic", "psycopg2", "psycopg", "prometheus_client", "numpy")


def loaded_modules(data_dir: Path, tmp_path: Path, *args: str) -> tuple[dict, list[str]]:
    out = tmp_path / f"modules-{args[0]}.json"
    proc = run_python(WRAPPER, str(out), *args, env=cli_env(data_dir), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(out.read_text())


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_submit_and_status_never_import_heavy_modules(data_dir: Path, tmp_path: Path) -> None:
    submitted, modules = loaded_modules(data_dir, tmp_path, "submit", "m", "x", "--json", "--semantic-cache")
    assert submitted["id"] == 1 and submitted["status"] == "pending"
    assert "ollama_cli.queue" in modules  # the dump saw the real work
    assert heavy(modules) == []

    status, modules = loaded_modules(data_dir, tmp_path, "status", "1", "--json")
    assert status["id"] == 1 and status["model"] == "m"
    assert "ollama_cli.store.lmdb" in modules
    assert heavy(modules) == []


def test_submit_and_status_load_only_their_own_command_module(data_dir: Path, tmp_path: Path) -> None:
    # Unmarshalling a module's code is paid on every run: `submit` and the other commands on jobs
    # shared cli/jobs.py, and `status` paid for submit's code and submission.py (6M instructions,
    # 2.4 % of the start-up floor), `submit` for theirs (3M).
    ours = ("ollama_cli.cli", "ollama_cli.cli.app")
    _, modules = loaded_modules(data_dir, tmp_path, "submit", "m", "x", "--json")
    assert [m for m in modules if m.startswith("ollama_cli.cli.") and m not in ours] == ["ollama_cli.cli.submit"]
    _, modules = loaded_modules(data_dir, tmp_path, "status", "1", "--json")
    assert [m for m in modules if m.startswith("ollama_cli.cli.") and m not in ours] == ["ollama_cli.cli.jobs"]
    assert "ollama_cli.submission" not in modules


def test_submit_and_status_parse_no_toml_unless_the_config_file_changed(data_dir: Path, tmp_path: Path) -> None:
    # The parse of the file is kept (settings/file.py): tomllib, 4.6 % of the start-up floor,
    # and platformdirs, 6 %, are imported by neither command, with no file or with one read before.
    for modules in (loaded_modules(data_dir, tmp_path, "submit", "m", "x", "--json")[1],
                    loaded_modules(data_dir, tmp_path, "status", "1", "--json")[1]):
        assert [m for m in modules if m.split(".")[0] in ("tomllib", "tomli", "platformdirs")] == []
    config = tmp_path / "xdg-config" / "ollama-q" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('priority = "high"\nretries = 1\ntimeout = "10m"\n[cache]\nttl = "7d"\n')
    _, first = loaded_modules(data_dir, tmp_path, "submit", "m", "x", "--json")
    assert "tomllib" in first or "tomli" in first  # parsed once
    for args in (("submit", "m", "x", "--json"), ("status", "2", "--json")):
        out, modules = loaded_modules(data_dir, tmp_path, *args)
        assert out["priority" if args[0] == "status" else "status"] in ("high", "pending")
        assert [m for m in modules if m.split(".")[0] in ("tomllib", "tomli", "platformdirs")] == []
        assert "ollama_cli.settings.hosts" not in modules  # Backend and URL parsing: backends' commands only


@pytest.mark.parametrize("args", [("submit", "m", "x", "--json"), ("status", "1", "--json"), ("info", "--json"),
                                  ("list", "--limit", "20", "--json")], ids=lambda a: a[0])
def test_nothing_of_postgresql_is_imported_on_the_lmdb_path(data_dir: Path, tmp_path: Path, args: tuple) -> None:
    loaded_modules(data_dir, tmp_path, "submit", "m", "x", "--json")
    _, modules = loaded_modules(data_dir, tmp_path, *args)
    assert "ollama_cli.store.lmdb" in modules
    assert [m for m in modules if "postgres" in m or m.split(".")[0] in ("psycopg2", "psycopg")] == []

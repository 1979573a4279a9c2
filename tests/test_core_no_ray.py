"""The Ray boundary: every module of the core (``supervisor/``) imports, and the offline commands run,
with Ray and ``actors`` unimportable (see ``supervisor/__init__.py``).

Each check runs in a fresh interpreter whose meta-path finder refuses ``ray``,
``ray.*``, ``actors`` and ``actors.*``, as on a machine without Ray.
"""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK = textwrap.dedent("""
    import sys

    class NoRay:
        BLOCKED = ("ray", "actors")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} blocked: the core must not import it")
            return None

    sys.meta_path.insert(0, NoRay())
    for m in [m for m in sys.modules if m.split(".")[0] in NoRay.BLOCKED]:
        del sys.modules[m]
""")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks():
    # without this, a blocker that silently let Ray through would make the tests below pass for nothing
    r = _python("""
        for name in ("ray", "ray.tune", "actors", "actors.tune"):
            try:
                __import__(name)
            except ImportError:
                continue
            raise SystemExit(f"{name} imported")
    """)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_core_module_imports_without_ray():
    r = _python("""
        import importlib, pkgutil, traceback
        import supervisor

        names, failed = [], []
        for m in pkgutil.walk_packages(supervisor.__path__, "supervisor.",
                                       onerror=lambda name: failed.append((name, "walk failed"))):
            if m.name == "supervisor.__main__":
                continue  # runs the CLI when imported; test_offline_commands_run_without_ray runs it
            names.append(m.name)
            try:
                importlib.import_module(m.name)
            except BaseException as e:
                failed.append((m.name, traceback.format_exception_only(type(e), e)[-1].strip()))
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "actors"))
        print(len(names))
        for name, why in failed:
            print("FAILED", name, why)
        if leaked:
            print("LEAKED", leaked)
        raise SystemExit(1 if failed or leaked else 0)
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    # the walk reached the whole package (commands, dashboard, detectors), not just its top
    assert int(r.stdout.split()[0]) >= 30, r.stdout


@pytest.mark.parametrize("command", ["report", "scan", "calibrate", "run", "sweep", "status", "dashboard"])
def test_offline_commands_run_without_ray(command):
    # ``python -m supervisor CMD --help``, inside the blocked interpreter
    r = _python("""
        import runpy
        sys.argv = ["supervisor", *sys.argv[1:]]
        runpy.run_module("supervisor", run_name="__main__", alter_sys=True)
    """, command, "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "usage:" in r.stdout and command in r.stdout


def test_report_and_scan_work_without_ray(tmp_path):
    """Beyond --help: the offline commands do their work with Ray blocked."""
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(f'{{"training_iteration": {i}, "env_runners": {{"episode_return_mean": {10.0 + i}}}}}\n'
                           for i in range(1, 6)))
    r = _python("""
        import runpy
        sys.argv = ["supervisor", *sys.argv[1:]]
        runpy.run_module("supervisor", run_name="__main__", alter_sys=True)
    """, "scan", str(log), "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["trials"][0]["steps"] == 5 and out["trials"][0]["metrics"] == ["episode_return_mean"]


def _ray_imports(tree: ast.AST):
    """(import node, names of the functions around it) for every import of ray or actors in a module."""
    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope + [child.name] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                 ast.ClassDef)) else scope
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            if any(n.split(".")[0] in ("ray", "actors") for n in names):
                yield child, scope
            yield from walk(child, inner)
    yield from walk(tree, [])


def test_only_a_commands_run_function_reaches_the_ray_side():
    """Stricter than importing: no lazy import of Ray hides in a core function or class either. Only a CLI
    command's ``run`` and the API's ``Supervisor(address=...)`` may import ``actors`` (the application layer);
    none imports ``ray`` itself."""
    bad = []
    for path in sorted((ROOT / "supervisor").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node, scope in _ray_imports(ast.parse(path.read_text(), rel)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            command_run = rel.startswith("supervisor/commands/") and scope == ["run"]
            # the Python API reaches a cluster's supervisor only when given an address
            api_remote = rel == "supervisor/api.py" and scope == ["Supervisor", "__init__"]
            if not ((command_run or api_remote) and all(n.split(".")[0] == "actors" for n in names)):
                bad.append(f"{rel}:{node.lineno} in {'.'.join(scope) or 'module'}: imports {', '.join(names)}")
    assert not bad, "\n".join(bad)

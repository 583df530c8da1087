"""The image's Python dependencies: what virtrigaud/ imports, what pyproject declares,
and what image/requirements.lock pins must agree. No network, no image needed."""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
from imagelib import REPO, load_lock_module
from packaging.requirements import Requirement

lock = load_lock_module()

# Used without an import statement: redis-py switches to hiredis's reply parser when it is
# installed (the shards' token buckets make one Redis call per hypervisor call).
IMPLICIT_RUNTIME = {"hiredis"}
# virtrigaud/dev runs the dev stack from a checkout installed with .[test]; these modules
# may import test-extra packages (they are never imported by the controller's commands,
# which the image test checks by importing every other module inside the image).
DEV_TREE = "virtrigaud/dev/"
TEST_ONLY_NAMES = {"pytest", "hypothesis", "mypy", "ruff", "fakepve", "kubernetes"}


def _project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {lock.canonical(Requirement(r).name) for r in requirements}


def runtime_names() -> set[str]:
    project = _project()["project"]
    assert isinstance(project, dict)
    return _names(project["dependencies"])


def extra_test_names() -> set[str]:
    project = _project()["project"]
    assert isinstance(project, dict)
    return _names(project["optional-dependencies"]["test"])


def third_party_imports(tree: Path, base: Path) -> dict[str, set[str]]:
    """Top-level names of every absolute import under tree that is neither stdlib nor
    virtrigaud, with the files (relative to base) importing each."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(tree.rglob("*.py")):
        rel = path.relative_to(base).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top != "virtrigaud":
                    found[top].add(rel)
    return found


def undeclared_imports(tree: Path, base: Path) -> list[str]:
    """Imports whose distribution the file's context does not declare, as messages."""
    runtime, test = runtime_names(), extra_test_names()
    dists = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(third_party_imports(tree, base).items()):
        provided_by = {lock.canonical(d) for d in dists.get(module, [])}
        for rel in sorted(files):
            allowed = runtime | test if rel.startswith(DEV_TREE) else runtime
            if not provided_by & allowed:
                problems.append(
                    f"{rel} imports {module!r} (distribution {sorted(provided_by) or '?'}), "
                    f"which is not in pyproject.toml [project].dependencies"
                    + (" or the test extra" if rel.startswith(DEV_TREE) else "")
                )
    return problems


def test_virtrigaud_imports_only_declared_runtime_dependencies() -> None:
    problems = undeclared_imports(REPO / "virtrigaud", REPO)
    assert not problems, "\n".join(problems)


def test_the_import_check_catches_an_undeclared_import(tmp_path: Path) -> None:
    pkg = tmp_path / "virtrigaud" / "kube"
    pkg.mkdir(parents=True)
    (pkg / "client.py").write_text("import kubernetes.client\nfrom pytest import fixture\n")
    problems = undeclared_imports(tmp_path / "virtrigaud", tmp_path)
    assert any("imports 'kubernetes'" in p for p in problems), problems
    assert any("imports 'pytest'" in p for p in problems), problems


def test_every_runtime_dependency_is_imported() -> None:
    dists = importlib.metadata.packages_distributions()
    imported: set[str] = set()
    for module in third_party_imports(REPO / "virtrigaud", REPO):
        imported |= {lock.canonical(d) for d in dists.get(module, [])}
    unused = runtime_names() - imported - IMPLICIT_RUNTIME
    assert not unused, (
        f"pyproject.toml declares runtime dependencies virtrigaud/ never imports: "
        f"{sorted(unused)}; move them to the test extra or drop them (they ship in the image)"
    )


def test_the_image_lock_is_current() -> None:
    inputs = lock.read_inputs()
    for path, which in ((lock.RUNTIME_LOCK, "runtime"), (lock.BUILD_LOCK, "build")):
        assert lock.locked_digest(path) == lock.inputs_digest(inputs, which), (
            f"{path.relative_to(REPO)} was resolved from other pyproject.toml/constraints.txt "
            f"contents: run `make image-lock` and commit the result"
        )


def test_the_staleness_check_sees_a_changed_dependency(tmp_path: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(REPO / "constraints.txt", tmp_path / "constraints.txt")
    runtime = lock.inputs_digest(lock.read_inputs(tmp_path), "runtime")
    build = lock.inputs_digest(lock.read_inputs(tmp_path), "build")
    text = (tmp_path / "pyproject.toml").read_text()
    assert '"pyyaml>=6,<7"' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"pyyaml>=6,<7"', '"pyyaml>=6.0.1,<7"'))
    assert lock.inputs_digest(lock.read_inputs(tmp_path), "runtime") != runtime
    (tmp_path / "constraints.txt").write_text("setuptools<80\n")
    assert lock.inputs_digest(lock.read_inputs(tmp_path), "build") != build


@pytest.mark.parametrize("path", ["requirements.lock", "build-requirements.lock"])
def test_lock_pins_satisfy_pyproject_and_constraints(path: str) -> None:
    lock_file = REPO / "image" / path
    pins = {pin.name: pin for pin in lock.parse_lock(lock_file)}
    inputs = lock.read_inputs()
    wanted = inputs["runtime" if path == "requirements.lock" else "build"]
    for text in wanted:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate():
            continue
        pin = pins.get(lock.canonical(req.name))
        assert pin, f"{path}: {req.name} (pyproject.toml) is not pinned"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{path}: {pin.name}=={pin.version} does not satisfy {text!r} in pyproject.toml"
        )
    for text in inputs["constraints"]:
        req = Requirement(text)
        pin = pins.get(lock.canonical(req.name))
        if pin:
            assert req.specifier.contains(pin.version, prereleases=True), (
                f"{path}: {pin.name}=={pin.version} breaks constraints.txt {text!r}"
            )


def test_the_runtime_lock_holds_no_test_only_package() -> None:
    pinned = {pin.name for pin in lock.parse_lock(lock.RUNTIME_LOCK)}
    assert not pinned & TEST_ONLY_NAMES, sorted(pinned & TEST_ONLY_NAMES)
    # Everything the test extra adds beyond the runtime closure stays out of the image.
    assert not (extra_test_names() - runtime_names()) & pinned, sorted(
        (extra_test_names() - runtime_names()) & pinned
    )


def test_a_lock_line_without_a_hash_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "requirements.lock"
    bad.write_text("ray==2.60.0\n")
    with pytest.raises(ValueError, match="not a pinned, hashed requirement"):
        lock.parse_lock(bad)

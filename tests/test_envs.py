"""Static checks of the conda env files (envs/*.yaml); conda itself is never run.

Every rule names an env file; every env file is fully pinned (the whole pip closure), on
conda-forge only, to the versions installed in the environment these tests run in, and to the
pins of pyproject.toml.
"""

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / "envs"
RULES = ROOT / "workflow" / "rules"
ENV_FILES = sorted(ENVS.glob("*.yaml"))
ENV_IDS = [path.name for path in ENV_FILES]

CONDA_PIN = re.compile(r"(?P<name>[A-Za-z0-9_.\-]+)=(?P<version>\d+(?:\.\d+)+)")
PIP_PIN = re.compile(r"(?P<name>[A-Za-z0-9_.\-]+)==(?P<version>[0-9][0-9A-Za-z.!+\-]*)")
RULE_LINE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)
PYTHON = "{}.{}.{}".format(*sys.version_info[:3])
USED_BY = re.compile(r"#\s*(?P<rules>\w+(?:\s*,\s*\w+)*)\s*:")

# Loads the workflow through Snakemake's own API in a separate process (the rule files import
# copra and edit sys.path and PATH) and prints every rule with its file and conda directive.
LOAD_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(), snakefile=Path("Snakefile"), workdir=Path(".")
    )._workflow
    rules = [
        {
            "name": rule.name,
            "snakefile": str(rule.snakefile),
            "conda": None if rule.conda_env is None else str(rule.conda_env),
            "conda_is_str": isinstance(rule.conda_env, str),
        }
        for rule in workflow.rules
    ]
print("RULES-JSON " + json.dumps(rules))
"""


def _load_env(path):
    return yaml.safe_load(path.read_text())


def _split_deps(env):
    """(conda dependencies, pip dependencies) of one env file."""
    conda, pip = [], []
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"unknown dependency section {dep}"
            pip.extend(dep["pip"] or [])
        else:
            conda.append(dep)
    return conda, pip


def _pip_pins(path):
    """{canonical name: (name as written, version)} of an env file's pip pins."""
    pins = {}
    for dep in _split_deps(_load_env(path))[1]:
        match = PIP_PIN.fullmatch(str(dep).strip())
        assert match, f"{path.name}: pip dependency {dep!r} is not pinned as name==version"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}: {match['name']} is pinned twice"
        pins[name] = (match["name"], match["version"])
    return pins


def _installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _own_requirements(name):
    """A distribution's requirements that apply here: markers evaluated, extras left out."""
    environment = {**default_environment(), "extra": ""}
    requirements = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirements.append(requirement)
    return requirements


@pytest.fixture(scope="module")
def workflow_rules():
    """Every rule of the workflow as Snakemake itself loads it."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_RULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RULES-JSON ")]
    assert done.returncode == 0 and lines, (
        f"Snakemake could not load the workflow:\n{done.stdout}\n{done.stderr}"
    )
    return json.loads(lines[-1].removeprefix("RULES-JSON "))


def _rule_file_rules():
    """{rule name: rule file} for every rule written in workflow/rules/*.smk."""
    found = {}
    for path in sorted(RULES.glob("*.smk")):
        for name in RULE_LINE.findall(path.read_text()):
            found[name] = path
    return found


def test_there_are_env_files_and_rule_files():
    assert ENV_FILES, "no envs/*.yaml"
    assert _rule_file_rules(), "no rules in workflow/rules/*.smk"


def test_every_rule_file_rule_is_known_to_snakemake(workflow_rules):
    loaded = {rule["name"]: Path(rule["snakefile"]).resolve() for rule in workflow_rules}
    for name, path in _rule_file_rules().items():
        assert name in loaded, f"rule {name} of {path.name} is not in the loaded workflow"
        assert loaded[name] == path.resolve(), f"rule {name}: loaded from {loaded[name]}"


def test_every_rule_names_an_existing_env_file(workflow_rules):
    rules = [r for r in workflow_rules if Path(r["snakefile"]).resolve().parent == RULES]
    assert rules, "Snakemake found no rules in workflow/rules/"
    problems = []
    for rule in rules:
        where = f"rule {rule['name']} ({Path(rule['snakefile']).name})"
        if rule["conda"] is None:
            problems.append(f"{where} has no conda: directive")
            continue
        if not rule["conda_is_str"]:
            problems.append(f"{where}: conda: is not a file name but {rule['conda']}")
            continue
        env = (Path(rule["snakefile"]).parent / rule["conda"]).resolve()
        if env.parent != ENVS or env.suffix != ".yaml" or not env.is_file():
            problems.append(f"{where}: conda: {rule['conda']} is not an existing envs/*.yaml")
    assert not problems, "\n".join(problems)


def test_env_comments_name_the_rules_that_use_them(workflow_rules):
    users = {path.name: set() for path in ENV_FILES}
    for rule in workflow_rules:
        if rule["conda_is_str"]:
            env = (Path(rule["snakefile"]).parent / rule["conda"]).resolve()
            users.setdefault(env.name, set()).add(rule["name"])
    for path in ENV_FILES:
        lines = path.read_text().splitlines()
        comment = " ".join(line.lstrip("# ") for line in lines[: lines.index("channels:")])
        match = USED_BY.match("# " + comment)
        assert match, f"{path.name}: leading comment {comment!r} is not '# rule, rule: what for'"
        named = {name.strip() for name in match["rules"].split(",")}
        assert named == users[path.name], (
            f"{path.name}: the comment names {sorted(named)}, used by {sorted(users[path.name])}"
        )


@pytest.mark.parametrize("path", ENV_FILES, ids=ENV_IDS)
def test_channels_are_conda_forge_only(path):
    assert _load_env(path).get("channels") == ["conda-forge", "nodefaults"]


@pytest.mark.parametrize("path", ENV_FILES, ids=ENV_IDS)
def test_conda_dependencies_are_exact_pins_of_what_runs_here(path):
    conda, pip = _split_deps(_load_env(path))
    names = set()
    for dep in conda:
        match = CONDA_PIN.fullmatch(str(dep).strip())
        assert match, f"{path.name}: conda dependency {dep!r} is not pinned as name=X.Y.Z"
        name, version = match["name"], match["version"]
        names.add(name)
        here = PYTHON if name == "python" else _installed(name)
        if here is not None:
            assert version == here, f"{path.name}: {name}={version}, but {here} runs here"
    assert "python" in names, f"{path.name}: python is not pinned"
    if pip:
        assert "pip" in names, f"{path.name}: pip dependencies without a pinned pip"


@pytest.mark.parametrize("path", ENV_FILES, ids=ENV_IDS)
def test_pip_dependencies_are_sorted(path):
    names = [canonicalize_name(Requirement(dep).name) for dep in _split_deps(_load_env(path))[1]]
    assert names == sorted(names), f"{path.name}: pip entries are not sorted by name"


def test_constraints_pin_exactly_what_the_envs_pin():
    """constraints.txt (the Makefile installs under it) holds every env pip pin, the same."""
    envs = {}
    for path in ENV_FILES:
        for name, (_, version) in _pip_pins(path).items():
            assert envs.setdefault(name, version) == version, f"{name}: two pins across envs"
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = PIP_PIN.fullmatch(line.strip())
            assert match, f"constraints.txt: {line!r} is not name==version"
            constraints[canonicalize_name(match["name"])] = match["version"]
    assert constraints == envs
    assert "--constraint constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("path", ENV_FILES, ids=ENV_IDS)
def test_pip_pins_equal_the_installed_versions(path):
    problems = []
    for name, (written, version) in _pip_pins(path).items():
        here = _installed(name)
        if here is None:
            problems.append(f"{written}=={version} is not installed here")
            continue
        try:
            pinned = Version(version)
        except InvalidVersion:
            problems.append(f"{written}=={version} is not a version")
            continue
        # A local label (torch's +cpu) names the build, which the env picks by platform.
        if pinned.local is not None:
            problems.append(f"{written}=={version}: pin {pinned.public}, not a build label")
        elif Version(here).public != str(pinned):
            problems.append(f"{written}=={version}, but {here} is installed here")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", ENV_FILES, ids=ENV_IDS)
def test_pip_pins_are_a_closed_set_that_agrees_with_each_package(path):
    """Each requirement of each pinned package is pinned too, at a version it accepts."""
    pins = _pip_pins(path)
    problems = []
    for name, (written, _) in pins.items():
        if _installed(name) is None:
            problems.append(f"{written} is not installed here, its requirements are unknown")
            continue
        for requirement in _own_requirements(name):
            needed = canonicalize_name(requirement.name)
            if needed not in pins:
                problems.append(f"{written} requires {requirement}, which is not pinned")
                continue
            version = pins[needed][1]
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{written} requires {requirement}, pinned {version}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_pip_pins_equal_the_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exact = {}
    for line in project.get("dependencies", []):
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            exact[canonicalize_name(requirement.name)] = specs[0].version
    assert exact, "pyproject.toml pins no dependency with =="
    problems = []
    for path in ENV_FILES:
        for name, (written, version) in _pip_pins(path).items():
            if name in exact and Version(version) != Version(exact[name]):
                problems.append(f"{path.name}: {written}=={version}, pyproject {exact[name]}")
    assert not problems, "\n".join(problems)

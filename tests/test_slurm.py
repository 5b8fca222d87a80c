"""The pipeline on SLURM for real: the demo through the SLURM executor, and the HPC profile.

They run on a single-node cluster on localhost (`bash .ci/slurm-cluster`: partition `debug`, no
accounting, no GPUs): the one running, or one the session starts as root and stops afterwards.
Without SLURM they skip, or fail with COPRA_NO_SKIPS=1 (CI); the profile's dry runs need no
cluster.
"""

import os
import re
import shutil
import subprocess
import time

import pandas as pd
import pytest
import yaml
from conftest import HEAD_ONLY, REPO, skip_or_fail, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

PROFILE = REPO / "profiles" / "slurm"
PARTITION = "debug"
DEMO_TASKS = {"localization", "membrane", "stability", "interaction", "rna_affinity"}
# The demo's head baseline on SLURM: the rules that run as SLURM jobs (the rest are localrules),
# and how many of each. Fine-tuning (minutes a job on 2 CPU cores) is left to test_pipeline.py.
SLURM_RULES = {
    "ingest": 4 + 4,  # and the tasks of continual sequences and of design (methods: [])
    "ingest_complexes": 1,
    "embed": 4,
    "embed_residues": 1,
    "train_head": 4,
    "train_complex": 1,
    "evaluate_run": 5,
}
# The rules the profile gives a GPU.
GPU_RULES = {
    "embed",
    "embed_shard",
    "embed_residues",
    "finetune_adapter",
    "finetune_adaptive_rank",
    "finetune_full",
    "train_complex",
    "lmc",
    "merge_seeds",
    "merge_tasks",
    "federate",
    "continual",
    "design_data",
    "design",
    "shapley",
    "pruning",
    "predict",
    "screen",
    "screen_all_scores",
}
# What every run on the CI cluster needs: it has no accounting database, so no sacct and no
# accounts (plugin 2.8.0 declares --slurm-no-account but never reads it: its account guess fails
# and it submits without -A); jobs stay visible to squeue for MinJobAge (600 s). Status checks
# every 5 s instead of 40 s keep the demo at about 2.5 minutes.
CLUSTER_ARGS = (
    "--slurm-no-account",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "5",
)
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def cluster_problem() -> str | None:
    """Why no usable SLURM cluster answers here, or None when one does."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no `sinfo` on PATH)"
    probe = subprocess.run(
        ["sinfo", "--noheader", f"--partition={PARTITION}", "--format=%a %t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    states = probe.stdout.split()
    if probe.returncode != 0 or not states:
        return f"`sinfo` finds no partition {PARTITION!r}: {probe.stderr.strip()}"
    if states[0] != "up" or states[1] not in {"idle", "mix", "alloc", "comp"}:
        return f"partition {PARTITION!r} is not usable (sinfo: {probe.stdout.strip()})"
    return None


def stop_cluster() -> None:
    """Stop the daemons that `.ci/slurm-cluster` started: slurmctld, slurmd and munged."""
    subprocess.run(["scontrol", "shutdown"], capture_output=True, timeout=60)
    subprocess.run(["pkill", "-x", "munged"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The running single-node cluster, or one this session starts (as root: `.ci/slurm-cluster`
    installs slurm-wlm and munge when missing) and stops again at the end.

    Where none can run, the tests skip with the reason, except with COPRA_NO_SKIPS=1 (set
    by .ci/run), where that is a failure.
    """
    problem, started = cluster_problem(), False
    if problem and os.geteuid() == 0:
        setup = subprocess.run(
            ["bash", str(REPO / ".ci" / "slurm-cluster")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        started = setup.returncode == 0
        problem = cluster_problem() if started else f"{problem}; {setup.stderr.strip()[-2000:]}"
    if problem:
        if started:
            stop_cluster()
        hint = f"{problem}; start the local cluster with `bash .ci/slurm-cluster` (as root)"
        skip_or_fail(hint)
    yield
    if started:
        stop_cluster()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The demo's head baseline through the production profile on the local cluster.

    The profile's GPU requests are switched off (the CI cluster has no GPUs; the test
    below checks that request on its own), and the partition is named the way a user would
    (which replaces the profile's default-resources, so runtime and mem_mb are repeated).
    PATH and PYTHONPATH are stripped to the system's: the jobs find the `copra` command and the
    venv's python only through what workflow/rules/common.smk puts into Snakemake's environment
    (copra/job_environment.py) and sbatch --export=ALL hands on to them.
    """
    workdir = tmp_path_factory.mktemp("slurm")
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        patch.delenv("PYTHONPATH", raising=False)
        patch.delenv("VIRTUAL_ENV", raising=False)
        result = snakemake(
            workdir,
            "--configfile",
            REPO / "config.yaml",
            "--config",
            *HEAD_ONLY,
            "--profile",
            PROFILE,
            "--executor",
            "slurm",
            "--jobs",
            "4",
            *CLUSTER_ARGS,
            "--slurm-keep-successful-logs",
            "--set-resources",
            *(f"{rule}:gpu=0" for rule in SLURM_RULES if rule in GPU_RULES),
            "--default-resources",
            f"slurm_partition={PARTITION}",
            "runtime=30",
            "mem_mb=2000",
            "--latency-wait",
            "10",
            "--retries",
            "0",
        )
    print(f"demo on SLURM: {time.monotonic() - start:.0f} s")
    return workdir, result.stdout + result.stderr


def test_demo_metrics_through_slurm(slurm_run):
    workdir, _ = slurm_run
    metrics = pd.read_csv(workdir / "results" / "metrics.tsv", sep="\t")
    assert set(metrics.task) == DEMO_TASKS
    assert set(metrics.split) == {"valid", "test", "ddg"}  # ddg: the complex task's mutations
    for task in DEMO_TASKS:
        assert len(metrics[metrics.task == task]) >= 2, task
    assert (workdir / "results" / "figures" / "metrics.png").stat().st_size > 10_000


def test_results_equal_a_local_run(slurm_run, head_only_demo):
    """The same config through sbatch and locally: the same numbers, to the last digit."""
    workdir, _ = slurm_run
    tables = [
        pd.read_csv(folder / "results" / "metrics.tsv", sep="\t").sort_values(
            ["task", "method", "seed", "split", "metric"], ignore_index=True
        )
        for folder in (workdir, head_only_demo)
    ]
    pd.testing.assert_frame_equal(*tables, check_exact=True)


def test_jobs_ran_as_slurm_jobs(slurm_run):
    workdir, output = slurm_run
    submitted = SUBMITTED.findall(output)
    assert len(submitted) == sum(SLURM_RULES.values()), output[-3000:]

    # One kept SLURM log per job, under .snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log,
    # each the job's own Snakemake that ran its one rule to the end.
    logs = workdir / ".snakemake" / "slurm_logs"
    for rule, count in SLURM_RULES.items():
        rule_logs = sorted((logs / f"rule_{rule}").rglob("*.log"))
        assert len(rule_logs) == count, (rule, rule_logs)
        for log in rule_logs:
            text = log.read_text()
            assert "--executor slurm-jobstep" in text and f"rule {rule}:" in text, log
            assert "1 of 1 steps (100%) done" in text, text[-3000:]
    assert {str(logs)} == {os.path.commonpath([path, str(logs)]) for _, path in submitted}

    # SLURM itself knows the jobs: finished, with Snakemake's rule in the comment.
    ids = [job_id for job_id, _ in submitted]
    queue = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%k|%T|%P", f"--jobs={','.join(ids)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split("|") for line in queue.stdout.split()]
    assert sorted(row[0] for row in rows) == sorted(ids), queue.stdout
    assert {row[2] for row in rows} == {"COMPLETED"}, queue.stdout
    assert {row[3] for row in rows} == {PARTITION}, queue.stdout
    rules = [re.match(r"rule_([a-z_]+?)(_wildcards_|$)", row[1]).group(1) for row in rows]
    assert {rule: rules.count(rule) for rule in set(rules)} == SLURM_RULES
    # The localrules stayed with the main Snakemake.
    for rule in ("demo_data", "gather_metrics", "plot_metrics"):
        assert f"localrule {rule}:" in output


def test_profile_is_what_snakemake_accepts(tmp_path):
    """The profile parses, and Snakemake plans the demo with it: the GPU rules ask for a GPU."""
    settings = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert settings["executor"] == "slurm"
    assert {"runtime", "mem_mb"} <= set(settings["default-resources"])
    assert "slurm_partition" not in settings["default-resources"]
    assert "slurm_account" not in settings["default-resources"]
    assert {
        rule: res.get("gpu") for rule, res in settings["set-resources"].items()
    } == dict.fromkeys(GPU_RULES, 1)
    # Snakemake ignores set-resources for rules it does not know: the names must be real.
    rules = snakemake(tmp_path, "--configfile", REPO / "config.yaml", "--list-rules").stdout
    assert GPU_RULES.issubset(rules.split()), rules

    result = snakemake(
        tmp_path, "--configfile", REPO / "config.yaml", "--profile", PROFILE, "--dry-run"
    )
    output = result.stdout + result.stderr
    # The local profile applies beside it and leaves the SLURM profile's settings alone.
    assert f"Using profiles {PROFILE} and workflow specific profile profiles/default" in output
    local = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert all(local[key] == settings[key] for key in set(local) & set(settings))
    resources = dict(re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: (.*)", output))
    assert set(SLURM_RULES) <= set(resources), output[-3000:]
    for rule, planned in resources.items():
        if rule in GPU_RULES:
            assert re.search(r"\bgpu=1\b", planned), (rule, planned)
        else:
            assert "gpu" not in planned and "runtime=60" in planned, (rule, planned)
    assert "runtime=240" in resources["embed"] and "mem_mb=4000" in resources["embed"]


def test_gpu_rules_declare_a_gpu_without_any_profile(tmp_path):
    """The rules themselves ask for `gpu=1` (sbatch --gpus=1 under the plugin; locally a count
    that `--resources gpu=N` caps); the other rules ask for none."""
    result = snakemake(
        tmp_path, "--configfile", REPO / "config.yaml", "--workflow-profile", "none", "--dry-run"
    )
    resources = dict(re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: (.*)", result.stdout))
    assert resources and {rule for rule, planned in resources.items() if "gpu=1" in planned} == (
        GPU_RULES & set(resources)
    )
    # only with embedding.shards > 1, and with a screen's predict.all_scores
    assert GPU_RULES - set(resources) == {"embed_shard", "screen_all_scores"}


def test_profile_submits_embed_with_a_gpu(slurm_run, tmp_path):
    """The production profile's embed job reaches sbatch with --gpus=1.

    The CI cluster has no GPUs, so SLURM refuses the job at submission, which is proof that the
    request really went to SLURM (and costs no job). Only embed may run, on a real input.
    """
    workdir, _ = slurm_run
    sequences = "results/interaction/data/sequences.tsv"
    (tmp_path / sequences).parent.mkdir(parents=True)
    shutil.copy2(workdir / sequences, tmp_path / sequences)
    result = snakemake(
        tmp_path,
        "results/interaction/data/embeddings.npz",
        "--configfile",
        REPO / "config.yaml",
        "--profile",
        PROFILE,
        *CLUSTER_ARGS,
        "--retries",
        "0",
        "--allowed-rules",
        "embed",
        "--config",
        "threads=2",
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    call = re.search(r"sbatch call:\s*\n\s*(sbatch .*)", output)
    assert call, output[-3000:]
    sbatch = call.group(1).split(" --wrap=")[0]
    assert "--gpus=1" in sbatch.split(), sbatch
    assert "--comment rule_embed_wildcards_interaction" in sbatch, sbatch
    assert "--cpus-per-task=2" in sbatch.split(), sbatch  # the config's threads
    assert "Invalid generic resource" in output, output[-3000:]

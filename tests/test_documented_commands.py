"""Every `mnist-lit` command in the README and the docs pages, word for word, after a failed
offline start: each is parsed as `mnist-lit` parses it (flags, values, config files, sweep files
and the flags they pass to their fits), `best` and `last` are found, and the Lightning commands
reach their Trainer method with what they asked for (the method itself is not run: training and
serving are tested elsewhere). `RUN`, the run folder that fit prints, is the tiny run's."""

import importlib
import re
import shlex
import shutil
from pathlib import Path

import pytest
from torchvision.datasets import MNIST

from mnist_lit.__main__ import TOOLS, main
from mnist_lit.cli import COMMANDS, MNISTCLI
from mnist_lit.inference.reader import checkpoint_file
from mnist_lit.sweeps.file import read_sweep_file
from mnist_lit.sweeps.flags import check_flags, check_trial_flags
from mnist_lit.tracking.runs import RUNS
from tests.helpers import REPO, exit_status, write_mnist

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"(?:^|\s)(?:python -m mnist_lit|-m mnist_lit|mnist-lit)\s+(.*)")
# the arguments after an sbatch file of configs/slurm/ are its command's (fit, sweep)
SBATCH = re.compile(
    r"^sbatch\s+(?:-\S+(?:\s+[^-\s]\S*)?\s+)*configs/slurm/(fit|sweep)\w*\.sbatch\s+(.*)"
)
SHELL_ENDS = re.compile(r"\s(?:&&|&|>|\|)(?:\s|$).*")  # `... > my.yaml`, `... &`, `&& ...`


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, arguments) of every mnist-lit command in a bash block, continuations joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*", "", line)  # a comment after the command
                if match := COMMAND.search(line):
                    arguments = SHELL_ENDS.sub("", match.group(1)).strip()
                    found.append((page.name, shlex.split(arguments)))
                elif match := SBATCH.search(line):  # the arguments after the file
                    found.append((page.name, [match.group(1), *shlex.split(match.group(2))]))
    return found


def test_the_docs_have_commands_to_check():
    pages = {page for page, _ in documented_commands()}
    assert {"README.md", "sweeps.md", "using-a-model.md", "runs.md", "clusters.md"} <= pages
    subcommands = {arguments[0] for _, arguments in documented_commands()}
    assert {"fit", "test", "predict", "report", "export", "sweep", "demo", "--help"} <= subcommands


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_run):
    """A project folder as the README leaves it: configs, ../shared/data (tiny digits), the user's
    own digits; `fit` failed there offline (MNIST's servers refused), leaving nothing, and then
    trained the run in lightning_logs/."""
    root = tmp_path_factory.mktemp("walk")
    project = root / "project"
    project.mkdir()
    (project / "configs").symlink_to(REPO / "configs")
    write_mnist(root / "shared" / "data")
    (project / "my_digits").mkdir()
    shutil.copy(REPO / "docs" / "base_report.png", project / "my_digit.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
        assert exit_status(["fit", "--config", "configs/fast.yaml"]) == 1
    assert sorted(p.name for p in project.iterdir()) == ["configs", "my_digit.png", "my_digits"]
    shutil.copytree(tiny_run[0], project / "lightning_logs" / "version_0")
    return project


@pytest.fixture
def in_project(project, monkeypatch):
    """Inside the project; MNIST's checksums are not the tiny digits', and no method of the
    Trainer runs: the subcommands called, with their arguments."""
    monkeypatch.chdir(project)
    monkeypatch.setattr("mnist_lit.data.verify_checksums", lambda data_dir: None)
    called = {}

    def run_subcommand(cli, subcommand: str) -> None:  # instead of the Trainer's method
        called[subcommand] = cli._prepare_subcommand_kwargs(subcommand)

    monkeypatch.setattr(MNISTCLI, "_run_subcommand", run_subcommand)
    return called


def run_documented(arguments: list[str], capsys) -> None:
    arguments = [a.replace("RUN", "lightning_logs/version_0") for a in arguments]
    name = arguments[0]
    if name in TOOLS:
        tool = importlib.import_module(TOOLS[name][0])
        options = getattr(tool, "parse", lambda argv: tool.parser().parse_args(argv))(arguments[1:])
        if name == "sweep" and options.sweep_file:  # the sweep file, and its fits' flags
            sweep = read_sweep_file(options.sweep_file)
            check_flags(sweep, options.trial_flags)
            check_trial_flags(sweep, options.trial_flags)
        if options.get("ckpt_path"):  # export, demo: `best` found
            assert checkpoint_file(options.ckpt_path, Path(RUNS)).is_file()
        return
    try:
        main(arguments)
    except SystemExit as exit_:  # --help, --print_config
        assert exit_.code == 0, capsys.readouterr().err
    capsys.readouterr()


@pytest.mark.slow  # 38 commands, each parsed as mnist-lit parses it: seconds in all
@pytest.mark.parametrize(
    "page, arguments",
    documented_commands(),
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_every_documented_command_runs_as_written(page, arguments, in_project, capsys):
    # parsed only: this machine has no GPU, nor 8 CPU processes to spare
    devices = "gpu" in arguments or "--trainer.devices" in arguments
    run_documented(arguments + (["--print_config"] if devices else []), capsys)
    parsed_only = devices or {"--help", "--print_config"} & set(arguments)
    if arguments[0] in COMMANDS and not parsed_only:
        (method, kwargs), *_ = in_project.items()
        assert method == arguments[0]
        if "--ckpt_path" in arguments:  # best, last, RUN/...: found in the tiny run
            assert "lightning_logs/version_0/checkpoints/" in kwargs["ckpt_path"]

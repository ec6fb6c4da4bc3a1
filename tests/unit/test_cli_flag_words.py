"""Flags given a value they do not take, flags that do not exist, and output flags that disagree:
each answered with the allowed values or the right flag and an example (exit 4, the commands' usage
error, before any request), where argparse said "invalid choice" or "unrecognized arguments", or
let --json win over -o yaml without a word."""

from __future__ import annotations

import pytest

from tests.support.usage import kubelock_output_when_parsed, kubelock_usage_error, no_cluster, rlock_usage_error

NO_MODE = ("there is no --mode option: a lock is exclusive unless --shared is given (held together with other "
           "--shared holders, never with an exclusive one); for example ")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["acquire", "--mode", "shared", "x://r"], NO_MODE + "kubelock acquire URI --shared, or kubelock acquire URI "
         "for an exclusive lock"),
        (["acquire", "x://r", "--mode=Shared"], NO_MODE + "kubelock acquire URI --shared"),
        (["run", "x://r", "--mode", "shared", "--", "true"], NO_MODE + "kubelock run URI --shared -- CMD"),
        (["acquire", "x://r", "--exclusive"], "there is no --exclusive option: a lock is exclusive unless --shared"),
        (["-o", "JSON", "status"], "-o takes json, yaml or wide (in lower case), not 'JSON'; for example -o json"),
        (["status", "--output=Yaml"], "-o takes json, yaml or wide (in lower case), not 'Yaml'"),
        (["status", "-o", "toml"], "-o takes json, yaml or wide, not 'toml'; for example -o json"),
        (["completion", "BASH"], "the shell takes bash, zsh or fish (in lower case), not 'BASH'; for example "
         "source <(kubelock completion bash)"),
        (["--json", "-o", "yaml", "status"], "--json is the same as -o json, and -o yaml asks for another output: "
         "give one of them, for example -o yaml"),
        (["status", "--json", "-o", "wide"], "--json is the same as -o json, and -o wide asks for another output"),
        (["run", "--bogus", "x://r", "--", "true"], "unrecognized arguments: --bogus; `kubelock run --help` lists "
         "the options of run, and the command and its own options go after `--`: kubelock run URI [URI...] -- CMD"),
        (["run", "x://r", "--bogus", "--", "true"], "unrecognized arguments: --bogus; `kubelock run --help`"),
        (["status", "--bogus"], "unrecognized arguments: --bogus; `kubelock status --help` lists the options of "
         "status"),
        (["--bogus", "status"], "--bogus is not an option of kubelock or of kubelock status: `kubelock status "
         "--help` lists the options of status"),  # not "an option of the command, so it goes after ..."
        (["--bogus=1", "run", "x://r", "--", "true"], "--bogus is not an option of kubelock or of kubelock run"),
        (["--bogus"], "--bogus is not an option of kubelock or of any of its commands: `kubelock --help` lists them"),
    ],
)
def test_kubelock_names_the_allowed_values_and_an_example(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_cluster(monkeypatch, instance="w1")
    err = kubelock_usage_error(argv, capsys)
    assert words in err, err
    assert "invalid choice" not in err


@pytest.mark.parametrize("argv", [["--mode", "shared", "x://r"], ["x://r", "--mode=exclusive"]])
def test_rlock_says_it_in_its_one_json_object(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_cluster(monkeypatch)
    answer = rlock_usage_error(argv, capsys)
    assert answer["error"] == "InvalidInput"
    assert 'for example rlock --shared "URI", or rlock "URI" for an exclusive lock' in answer["message"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "-o", "json", "status"],  # the same output twice
        ["-o", "yaml", "status"],
        ["status", "-A"],
        ["run", "x://r", "--", "sh", "--mode", "shared"],  # the command's own arguments are its own
    ],
)
def test_what_is_right_is_left_alone(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_cluster(monkeypatch, instance="w1")
    assert "there is no" not in kubelock_output_when_parsed(argv, capsys)

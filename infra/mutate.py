"""Mutation testing (``make mutate``): cosmic-ray over core/ and the adapters' pacing and admin modules.

Usage: python infra/mutate.py COSMIC_RAY_BIN_DIR [MODULE ...]

Each module is mutated in a scratch copy of the project (``.mutate/<module>/``; the working tree is never
touched), one mutant at a time, and after each one only the test files that exercise the module run
(``pytest -x``), on SQLite and the in-process cache (``-k "not postgresql and not redis"``), so a
mutation run never depends on the shared PostgreSQL or Redis. It prints each module's score (killed
mutants over all mutants that ran) and writes the surviving mutants' diffs to ``.mutate/<module>.txt``.
Not part of ``make test``: it runs the tests once per mutant (minutes per module), before a release.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutate"
BACKENDS = "not postgresql and not redis"  # SQLite + the in-process cache, where a test offers both

# The module, and the tests that exercise it: the fastest selection that covers it (files, or single
# tests for the adapters, whose files take many seconds), run once per mutant until one fails.
MODULES: dict[str, list[str]] = {
    "core/dynamics.py": ["tests/dynamics/test_rule_edges.py", "tests/dynamics/test_rules.py", "tests/dynamics/test_state_updates.py"],
    "core/feelings.py": ["tests/dynamics/test_rules.py", "tests/dynamics/test_state_updates.py"],
    "core/emotions.py": ["tests/dynamics/test_rules.py", "tests/core/test_prompt.py", "tests/dynamics/test_mood.py"],
    "core/appraisal.py": ["tests/dynamics/test_rules.py", "tests/appraisal"],
    "core/derive.py": ["tests/dynamics/test_rules.py", "tests/dynamics/test_state_updates.py"],
    "core/state.py": ["tests/dynamics/test_rules.py", "tests/dynamics/test_state_updates.py", "tests/dynamics/test_mood.py"],
    "core/flood.py": ["tests/core/test_flood.py", "tests/core/test_flood_edges.py", "tests/telegram/test_flood.py", "tests/discord/test_flood.py"],
    "core/text.py": ["tests/core/test_text.py", "tests/core/test_split_edges.py", "tests/core/test_control_text.py"],
    "core/cards.py": ["tests/core/test_cards.py"],
    "core/card_files.py": ["tests/core/test_card_files.py", "tests/core/test_cards.py"],
    "core/prompt.py": ["tests/core/test_prompt.py", "tests/engine/test_training_layout.py"],
    "core/hot.py": ["tests/engine/test_engine.py", "tests/dynamics/test_state_updates.py"],
    "core/commands.py": ["tests/engine/test_commands.py"],
    "core/engine.py": ["tests/engine/test_engine.py", "tests/engine/test_edges.py"],
    "core/turn.py": ["tests/engine/test_engine.py", "tests/engine/test_edges.py", "tests/engine/test_durable_turns.py"],
    "bots/streaming.py": [
        "tests/test_edit_budget.py",
        "tests/telegram/test_groups.py::test_a_reply_streams_by_editing_one_message_at_a_paced_rate",
        "tests/telegram/test_groups.py::test_a_9000_character_reply_arrives_as_three_messages",
        "tests/telegram/test_groups.py::test_regenerating_a_long_reply_writes_over_all_its_messages",
        "tests/discord/test_chat.py::test_a_message_in_a_bound_channel_gets_a_streamed_reply_to_it",
        "tests/discord/test_chat.py::test_a_long_reply_continues_in_new_messages_of_at_most_2000_characters",
        "tests/discord/test_chat.py::test_edits_never_exceed_five_per_five_seconds_in_a_channel",
        "tests/discord/test_chat.py::test_a_rate_limited_edit_is_retried_and_the_whole_reply_arrives",
        "tests/discord/test_chat.py::test_first_contact_shows_the_characters_greeting_before_the_reply",
        "tests/telegram/test_private_chat.py::test_refused_drafts_fall_back_to_send_then_edit_for_the_rest_of_the_process",
    ],
    "bots/telegram/drafts.py": ["tests/telegram/test_private_chat.py"],
    "bots/telegram/replies.py": ["tests/telegram/test_groups.py", "tests/telegram/test_private_chat.py"],
    "bots/telegram/admins.py": [
        "tests/telegram/test_admin_lookup.py",
        "tests/telegram/test_groups.py::test_a_non_admin_cannot_bind_and_nothing_changes",
        "tests/telegram/test_groups.py::test_a_chat_admin_binds_a_character_in_mention_mode_by_default",
        "tests/telegram/test_commands.py::test_a_group_admin_manages_characters",
        "tests/telegram/test_commands.py::test_admin_commands_are_refused_to_others",
    ],
}

# Operators left out: swaps that mostly make nonsense no test is needed to see (2 ** x for 2 * x,
# shifts and bit operators for arithmetic, == for <), and the variable replacer/inserter, whose many
# mutants are nearly all type errors. What stays: boundary and negated comparisons, + and -, * and /,
# and/or, not, True/False, numbers, break/continue, empty loops, swallowed exceptions, dropped decorators.
KEPT_COMPARISONS = "Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Lt_Gt|Gt_Lt|LtE_GtE|GtE_LtE|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is|In_NotIn|NotIn_In"
EXCLUDED_OPERATORS = [
    rf"core/ReplaceComparisonOperator_(?!({KEPT_COMPARISONS})$)",
    r"core/ReplaceBinaryOperator_\w+_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod|FloorDiv)$",
    r"core/ReplaceBinaryOperator_(Pow|RShift|LShift|BitOr|BitAnd|BitXor)_",
    r"core/ReplaceUnaryOperator_\w+_Invert$",
    r"core/ReplaceUnaryOperator_Invert_",
    r"core/Variable(Replacer|Inserter)",
]


def test_command(python: str, tests: list[str]) -> str:
    return shlex.join([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests, "-k", BACKENDS])


def copy_tree(tree: Path) -> None:
    """A fresh copy of the project to mutate (sources, tests, and the files tests read)."""
    shutil.rmtree(tree, ignore_errors=True)
    skip = shutil.ignore_patterns(".git", ".venv*", ".mutate", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT, tree, ignore=skip)


def write_config(module: str, command: str, timeout: float) -> Path:
    name = module.replace("/", ".").removesuffix(".py")
    config = SCRATCH / f"{name}.toml"
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps(module)}",
        f"timeout = {timeout:.0f}",
        "excluded-modules = []",
        f"test-command = {json.dumps(command)}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}",
        "",
    ]
    config.write_text("\n".join(lines))
    return config


def run(args: list[str], tree: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=tree, check=True, **kwargs)


def tally(dump: str) -> tuple[int, list[tuple[dict, dict]], int, int]:
    """From ``cosmic-ray dump``: the mutants killed, the survivors (work item, result), those filtered
    out, and those not counted (not run, not buildable, or the test command could not start)."""
    killed, survivors, skipped, other = 0, [], 0, 0
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is not None and result.get("worker_outcome") == "skipped":
            skipped += 1
        elif result is None or result.get("worker_outcome") != "normal":
            other += 1  # not run, the mutant could not be built, or the worker broke: not counted
        elif result.get("test_outcome") == "survived":
            survivors.append((item, result))
        elif result.get("test_outcome") == "killed":
            killed += 1
        else:
            other += 1  # "incompetent": the test command itself could not start
    return killed, survivors, skipped, other


def mutate(module: str, bin_dir: Path, python: str) -> dict:
    tests = MODULES[module]
    name = module.replace("/", ".").removesuffix(".py")
    command = test_command(python, tests)
    tree = SCRATCH / name  # a copy of its own per module, so that two runs may go side by side
    copy_tree(tree)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}

    started = time.monotonic()
    baseline = subprocess.run(shlex.split(command), cwd=tree, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if baseline.returncode != 0:
        sys.exit(f"make mutate: the tests for {module} fail without any mutation; fix them first:\n{baseline.stdout[-2000:]}")
    timeout = max(30.0, 4 * took)  # a mutant that loops forever counts as killed when this runs out

    config = write_config(module, command, timeout)
    session = SCRATCH / f"{name}.sqlite"
    session.unlink(missing_ok=True)
    run([str(bin_dir / "cosmic-ray"), "init", str(config), str(session)], tree, env=env)
    run([str(bin_dir / "cr-filter-operators"), str(session), str(config)], tree, env=env)
    run([str(bin_dir / "cr-filter-pragma"), str(session)], tree, env=env)
    started = time.monotonic()
    run([str(bin_dir / "cosmic-ray"), "exec", str(config), str(session)], tree, env=env)
    minutes = (time.monotonic() - started) / 60

    dump = run([str(bin_dir / "cosmic-ray"), "dump", str(session)], tree, env=env, capture_output=True, text=True).stdout
    killed, survivors, skipped, other = tally(dump)
    ran = killed + len(survivors)
    score = 100.0 * killed / ran if ran else 100.0

    report = SCRATCH / f"{name}.txt"
    with report.open("w") as out:
        out.write(f"{module}: {killed}/{ran} killed ({score:.1f}%), {minutes:.1f} min; tests: {' '.join(tests)}\n\n")
        for item, result in survivors:
            for mutation in item["mutations"]:
                out.write(f"--- {mutation['module_path']}:{mutation['start_pos'][0]} {mutation['operator_name']} #{mutation['occurrence']}\n")
            out.write(result.get("diff") or "")
            out.write("\n")
    print(f"{module}: {killed}/{ran} mutants killed ({score:.1f}%), {len(survivors)} survived, "
          f"{skipped} filtered out, {other} not run; {minutes:.1f} min; survivors in {report.relative_to(ROOT)}", flush=True)
    return {"module": module, "killed": killed, "ran": ran, "score": score, "minutes": minutes}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bin_dir = Path(sys.argv[1]).resolve()
    modules = [module.removeprefix("./") for module in sys.argv[2:]] or list(MODULES)
    unknown = [module for module in modules if module not in MODULES]
    if unknown:
        sys.exit(f"make mutate: no test selection for {', '.join(unknown)}; add it to MODULES in infra/mutate.py (known: {', '.join(MODULES)})")
    python = sys.executable
    SCRATCH.mkdir(exist_ok=True)
    results = [mutate(module, bin_dir, python) for module in modules]
    killed, ran = sum(r["killed"] for r in results), sum(r["ran"] for r in results)
    if len(results) > 1 and ran:
        print(f"total: {killed}/{ran} mutants killed ({100.0 * killed / ran:.1f}%)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A stand-in for `adb` in tests: logs each invocation and replays recorded outputs.

Environment:
    ADB_STANDIN_LOG       JSON-lines file; each call appends its argv (without the program name).
    ADB_STANDIN_SCENARIO  JSON file {"rules": [...]}; the first rule matching the call decides the
                          output and exit code. A rule matches when all its given keys hold:
        "argv":        the exact argument list
        "argv_prefix": the argument list starts with these
        "contains":    each of these strings occurs in the arguments joined by spaces
    and answers with "output" (text) or "output_file" (a file name in tests/data/benchmark_model/, or
    an absolute path), "returncode" (default 0) and "stream" ("stdout", the default, or "stderr").
A call that no rule matches exits with code 97 and says so on stderr, so a test fails loudly.
"""
import json
import os
import sys

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "benchmark_model")
NO_RULE = 97


def matches(rule: dict, argv: list) -> bool:
    joined = " ".join(argv)
    return (rule.get("argv", argv) == argv
            and argv[:len(rule.get("argv_prefix", []))] == rule.get("argv_prefix", [])
            and all(text in joined for text in rule.get("contains", [])))


def main() -> int:
    argv = sys.argv[1:]
    with open(os.environ["ADB_STANDIN_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    with open(os.environ["ADB_STANDIN_SCENARIO"]) as scenario:
        rules = json.load(scenario)["rules"]
    rule = next((rule for rule in rules if matches(rule, argv)), None)
    if rule is None:
        sys.stderr.write(f"adb stand-in: no rule for {argv}\n")
        return NO_RULE
    output = rule.get("output", "")
    if "output_file" in rule:
        with open(os.path.join(DATA_DIR, rule["output_file"])) as recorded:
            output = recorded.read()
    stream = sys.stderr if rule.get("stream") == "stderr" else sys.stdout
    stream.write(output)
    stream.flush()
    return int(rule.get("returncode", 0))


if __name__ == "__main__":
    sys.exit(main())

# Shared by the shell test scripts (charts/ferrolb/test.sh, image/test.sh): one line per check,
# "ok   - ..." or "FAIL - ..." with details indented below, and a count at the end.
# Source it; it defines `passed`, `failed`, `skipped` and the functions below.

passed=0
failed=0
skipped=0

# ok DESCRIPTION
ok() { passed=$((passed + 1)); echo "ok   - $1"; }

# bad DESCRIPTION [DETAILS]: DETAILS (at most 15 lines) are printed indented.
bad() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | head -n 15 | sed 's/^/       /'; fi
}

# skip DESCRIPTION: a check that could not run here, said so.
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else bad "$desc"; fi
}

# finish: prints the count and returns non-zero if anything failed.
finish() {
    if ((skipped)); then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [[ $failed -eq 0 ]]
}

# Sourced by the scripts here (call.sh, refusal.sh).
#
# callgrind_count FILE FUNCTION COMMAND... prints the instructions counted inside FUNCTION (on
# any thread) while COMMAND runs under valgrind --tool=callgrind, its profile left in FILE and
# valgrind's log in FILE.log. A failed run (valgrind's or the program's) or a log without a
# count stops the calling script with that log: an empty count would otherwise surface later
# as a bash arithmetic error, or a partial one as a wrong figure (a command substitution does
# not inherit `set -e`, so the function exits itself and the assignment then fails).
callgrind_count() {
    local file=$1 function=$2 ir
    shift 2
    if ! valgrind --tool=callgrind --callgrind-out-file="$file" \
        --toggle-collect="*$function*" "$@" 2>"$file.log" >/dev/null; then
        echo "callgrind_count: '$*' failed under valgrind; its log:" >&2
        cat "$file.log" >&2
        exit 1
    fi
    ir=$(awk '/Collected :/ {print $NF}' "$file.log")
    # 0: FUNCTION was never entered (renamed, or inlined away), not a free operation.
    if [[ ! $ir =~ ^[0-9]+$ ]] || (( ir == 0 )); then
        echo "callgrind_count: no instruction count in the log of '$*':" >&2
        cat "$file.log" >&2
        exit 1
    fi
    echo "$ir"
}

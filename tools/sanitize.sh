#!/usr/bin/env bash
# The C core under AddressSanitizer and UndefinedBehaviorSanitizer (gcc's runtimes):
# build mnsched/_core.c with -fsanitize=address,undefined in a scratch copy of the
# tree, and run the driver's tests against it, with Python allocating through malloc
# (PYTHONMALLOC=malloc) so that a reference the driver drops too early shows up as a
# use-after-free. Any report aborts the run (exit status non-zero).
#
#   tools/sanitize.sh [pytest args]     (default: the tests that exercise the driver)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/mnsched" "$repo/tests" "$repo/samples" "$repo/pyproject.toml" "$work/"
rm -f "$work"/mnsched/_core*.so
cd "$work"
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -shared -fPIC -I"$include" -Wall -Werror -Wno-missing-field-initializers \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g \
  mnsched/_core.c -o "mnsched/_core$suffix"
asan=$(gcc -print-file-name=libasan.so)
# detect_leaks=0: CPython itself does not free everything at exit.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc PYTHONPATH="$work" MNSCHED_PURE=0
LD_PRELOAD="$asan" python3 -c "import mnsched.g as g; assert g.DRIVER == 'c', 'the C core did not load'"
if [ $# -eq 0 ]; then
  set -- tests/test_driver.py tests/test_runtime.py tests/test_chan.py tests/test_select.py \
    tests/test_sync.py tests/test_sched.py tests/test_runq.py tests/test_embed.py \
    tests/test_steptoken.py tests/test_serial.py \
    tests/test_observe.py \
    tests/stress/test_cancel_races.py -q -p no:cacheprovider \
    --deselect tests/test_observe.py::test_trace_plot_draws_a_picture \
    --deselect tests/test_serial.py::test_fork_from_a_goroutine_while_ps_run \
    --deselect tests/test_serial.py::test_concurrent_subprocesses_from_goroutines
fi
# (matplotlib's C++ extension cannot load with ASan preloaded: its exception interceptor
# finds no C++ runtime; the picture is drawn by Python code, outside the C core anyway.
# gcc 12's ASan allocator is not fork-safe: a child forked while another thread allocates
# can hang in its first malloc (uvloop's spawn runs the at-fork handlers in the child).
# The fork tests cover Python code and one line of C, _core.after_fork.)
LD_PRELOAD="$asan" python3 -m pytest "$@"

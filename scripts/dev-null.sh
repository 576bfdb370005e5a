# Sourced by test.sh and demo.sh. cargo gives the compiler probes it runs (`rustc -`) /dev/null as
# standard input. On a machine where /dev/null has become a regular file (something running as
# root replaced it), that file collects whatever was "discarded" into it, and the probe compiles
# it: "failed to run `rustc` to learn about target-specific information ... unknown start of
# token". Put the device back when we can, else stop with that diagnosis.
if [ ! -c /dev/null ]; then
    if [ "$(id -u)" = 0 ] && rm -f /dev/null && mknod -m 666 /dev/null c 1 3; then
        echo "$0: /dev/null was not the null device (cargo's compiler probes read it); recreated it" >&2
    else
        echo "$0: /dev/null is not the null device (cargo's compiler probes read it); recreate it as root: rm /dev/null; mknod -m 666 /dev/null c 1 3" >&2
        exit 1
    fi
fi

#!/usr/bin/env bash
# Cargo runner for the MPS2 AN386 firmware: boots the ELF in qemu-system-arm.
#
#   qemu-run.sh ELF [extra qemu args]
#
# UART0 goes to $FACEMARK_SERIAL if set (any QEMU -serial value, e.g.
# `tcp:127.0.0.1:4444` to connect to a host that listens there, or `stdio`);
# otherwise QEMU listens on 127.0.0.1:$FACEMARK_PORT (default 4444) and waits
# for the host to connect before it boots:
#   facemark board info --tcp 127.0.0.1:4444
# The defmt log (semihosting, QEMU's stdout) is decoded with defmt-print when
# it is installed, else written raw to $FACEMARK_DEFMT_LOG (default ELF.defmt).
# `-icount shift=0` makes SysTick count instructions (1 tick = 40).
set -euo pipefail
elf=$1
shift
port=${FACEMARK_PORT:-4444}
serial=${FACEMARK_SERIAL:-tcp:127.0.0.1:$port,server=on,wait=on}
qemu=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none
    -semihosting-config enable=on,target=native -icount shift=0
    -serial "$serial" -kernel "$elf" "$@")
echo "facemark: booting $(basename "$elf") in QEMU, UART0 on $serial" >&2
if command -v defmt-print >/dev/null 2>&1; then
    "${qemu[@]}" | defmt-print -e "$elf"
else
    log=${FACEMARK_DEFMT_LOG:-$elf.defmt}
    echo "facemark: raw defmt log in $log (cargo install defmt-print --locked to decode it)" >&2
    exec "${qemu[@]}" >"$log"
fi

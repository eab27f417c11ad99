#!/usr/bin/env bash
# Cargo runner of the emulated boards: boots the ELF in qemu-system-arm with
# the machine's line of ./qemu-machines (the host reads the same file).
#
#   qemu-run.sh MACHINE ELF [extra qemu args]
#
# MACHINE is the board crate's QEMU machine (mps2-an386, netduinoplus2,
# mps2-an505, mps2-an521); its `.cargo/config.toml` passes it. The board's UART (AN386
# UART0, STM32F405 USART1: QEMU's first serial port) goes to $FACEMARK_SERIAL
# if set (any QEMU -serial value, e.g. `tcp:127.0.0.1:4444` to connect to a
# host that listens there, `stdio`, or `null`); otherwise QEMU listens on
# 127.0.0.1:$FACEMARK_PORT (default 4444) and waits for the host to connect
# before it boots:
#   facemark board info --tcp 127.0.0.1:4444
# The defmt log (semihosting, QEMU's stdout) is decoded with defmt-print when
# it is installed, else written raw to $FACEMARK_DEFMT_LOG (default ELF.defmt).
# FACEMARK_STDOUT=text passes QEMU's stdout through as it is (the AN505's
# kernel check prints text).
set -euo pipefail
machine=$1
elf=$2
shift 2
machines="$(dirname "$0")/qemu-machines"
line=$(grep -E "^$machine[[:space:]]" "$machines") || {
    echo "qemu-run.sh: no machine '$machine' in $machines" >&2
    exit 2
}
read -ra machine_args <<<"${line#"$machine"}"
port=${FACEMARK_PORT:-4444}
serial=${FACEMARK_SERIAL:-tcp:127.0.0.1:$port,server=on,wait=on}
qemu=(qemu-system-arm "${machine_args[@]}" -serial "$serial" -kernel "$elf" "$@")
echo "facemark: booting $(basename "$elf") on $machine in QEMU, serial port on $serial" >&2
if [ "${FACEMARK_STDOUT:-defmt}" = text ]; then
    exec "${qemu[@]}"
elif command -v defmt-print >/dev/null 2>&1; then
    "${qemu[@]}" | defmt-print -e "$elf"
else
    log=${FACEMARK_DEFMT_LOG:-$elf.defmt}
    echo "facemark: raw defmt log in $log (cargo install defmt-print --locked to decode it)" >&2
    exec "${qemu[@]}" >"$log"
fi

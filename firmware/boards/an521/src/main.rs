//! Facemark on both cores of the Arm MPS2 AN521 (SSE-200, two Cortex-M33)
//! as `qemu-system-arm -machine mps2-an521` models it: the dual-core split
//! the Pico 2 (two Cortex-M33) runs, tested where QEMU can run it. Core 0
//! serves over CMSDK UART0 (its secure alias, 0x50200000) and logs by
//! semihosting; at boot it releases core 1 through the SSE-200's system
//! control block (INITSVTOR1: core 1's vector table; CPUWAIT: hold or
//! run), and every inference is shared between them
//! ([`facemark_app::dual`]).
#![no_std]
#![no_main]

use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use facemark_app::dual::Split;
use facemark_app::uart::CmsdkUart;
use facemark_core::network::LAYER_COUNT;
use facemark_core::{Arena, Keypoints, Model};
use facemark_serve::{Board, Event};

/// CMSDK APB UART0, through the secure alias (both cores boot secure, and
/// the peripheral protection controller lets secure accesses through).
const UART0: usize = 0x5020_0000;
/// UART0's receive and transmit interrupt lines (32, 33) in NVIC ISER1.
const NVIC_ISER1: usize = 0xe000_e104;
const UART0_IRQS: u32 = 0b11;

/// The SSE-200's system control registers (secure).
const SYSCTL: usize = 0x5002_1000;
/// Where core 1 reads its vector table when it leaves reset.
const INITSVTOR1: usize = SYSCTL + 0x114;
/// Bit n set holds core n in reset; the SSE-200 resets with core 1 held.
const CPUWAIT: usize = SYSCTL + 0x118;
const CPUWAIT_CORE1: u32 = 1 << 1;

#[exception]
unsafe fn DefaultHandler(_irqn: i16) {
    // SAFETY: UART0's registers, which `main` handed the UART; its receive
    // interrupt is the only one enabled.
    unsafe { CmsdkUart::clear_rx_interrupt(UART0) };
}

/// How this build shares its inferences (see the crate's features).
const BUILD_SPLIT: Split = if cfg!(feature = "part0-only") {
    Split::OnePart(0)
} else if cfg!(feature = "part1-only") {
    Split::OnePart(1)
} else if cfg!(feature = "one-core") {
    Split::OneCore
} else {
    Split::BothCores
};

pub struct An521 {
    split: Split,
}

/// SysTick runs from the 20 MHz CPU clock; under `-icount shift=0` one
/// instruction takes 1 ns, so 1 tick = 50 instructions (of both cores
/// together, which share QEMU's virtual clock).
fn instructions() -> u64 {
    facemark_app::clock::ticks() * 50
}

impl Board for An521 {
    const NAME: &'static str = if matches!(BUILD_SPLIT, Split::BothCores) {
        "mps2-an521 (qemu, 2 cores)"
    } else {
        "mps2-an521 (qemu, 1 core)"
    };
    const COST_UNIT: &'static str = "instructions";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn now(&mut self) -> u64 {
        instructions()
    }

    fn event(&mut self, e: Event<'_>) {
        facemark_app::log_event(e);
    }

    fn infer(
        &mut self,
        model: &Model<'_>,
        arena: &mut Arena,
        image_at: usize,
        marks: &mut [u64; LAYER_COUNT],
    ) -> Option<Keypoints> {
        let mark = |i: usize| facemark_serve::set_mark(marks, i, instructions());
        facemark_app::dual::infer(self.split, model, arena, image_at, mark)
    }
}

/// Core 1's stack (the kernels' frames, the row buffer; about 3 KiB used).
const CORE1_STACK_BYTES: usize = 8 * 1024;

#[repr(C, align(8))]
struct Stack([u8; CORE1_STACK_BYTES]);
static mut CORE1_STACK: Stack = Stack([0; CORE1_STACK_BYTES]);

/// Core 1's vector table: initial stack pointer, reset, and every fault
/// to [`core1_fault`] (VTOR needs 128-byte alignment for 16 entries).
#[repr(C, align(128))]
struct VectorTable([usize; 16]);
static mut CORE1_VECTORS: VectorTable = VectorTable([0; 16]);

/// Releases core 1 into [`core1_reset`] on its own stack.
fn start_core1() {
    // SAFETY: core 1 is held in reset, so nothing else uses these statics;
    // this runs once, from `main`, before it is released.
    let table = unsafe { &mut *addr_of_mut!(CORE1_VECTORS) };
    table.0[0] = addr_of_mut!(CORE1_STACK) as usize + CORE1_STACK_BYTES;
    table.0[1] = core1_reset as *const () as usize;
    for v in &mut table.0[2..] {
        *v = core1_fault as *const () as usize;
    }
    cortex_m::asm::dsb();
    // SAFETY: the system control block's registers: core 1's boot vector
    // table, then its release (CPUWAIT bit 1 from 1 to 0).
    unsafe {
        write_volatile(INITSVTOR1 as *mut u32, table as *const VectorTable as u32);
        let wait = read_volatile(CPUWAIT as *const u32);
        write_volatile(CPUWAIT as *mut u32, wait & !CPUWAIT_CORE1);
    }
}

/// Core 1's reset handler: the FPU on (cortex-m-rt's reset does it for
/// core 0 only; core 1 shares the statics core 0 has initialised), then
/// its share of every inference.
extern "C" fn core1_reset() -> ! {
    const CPACR: *mut u32 = 0xe000_ed88 as *mut u32;
    // SAFETY: this core's own coprocessor access register: CP10 and CP11
    // full access.
    unsafe { write_volatile(CPACR, read_volatile(CPACR) | (0xf << 20)) };
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    facemark_app::dual::core1_serve()
}

extern "C" fn core1_fault() -> ! {
    halt()
}

#[entry]
fn main() -> ! {
    facemark_app::stack::paint();
    let Some(cp) = cortex_m::Peripherals::take() else {
        halt()
    };
    facemark_app::clock::start(cp.SYST);
    // SAFETY: UART0's registers, used by nothing else.
    let mut uart = unsafe { CmsdkUart::new(UART0) };
    // SAFETY: NVIC ISER1: lets the receive interrupt wake this core (not core 1).
    unsafe { write_volatile(NVIC_ISER1 as *mut u32, UART0_IRQS) };
    let split = if BUILD_SPLIT == Split::BothCores {
        start_core1();
        Split::after_launch(true)
    } else {
        BUILD_SPLIT
    };
    facemark_app::run(An521 { split }, &mut uart, halt)
}

/// Ends QEMU with a failure status.
pub fn halt() -> ! {
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    halt()
}

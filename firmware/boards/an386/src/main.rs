//! Facemark on the Arm MPS2 AN386 (Cortex-M4F) as `qemu-system-arm -machine
//! mps2-an386` models it: CMSDK APB UART0 at 0x40004000, SysTick at 25 MHz,
//! semihosting for the defmt log and for exiting.
#![no_std]
#![no_main]

use core::ptr::write_volatile;

use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use facemark_app::uart::CmsdkUart;
use facemark_serve::{Board, Event};

/// CMSDK APB UART0.
const UART0: usize = 0x4000_4000;
/// UART0's receive interrupt line on the AN386.
const IRQ_UART0_RX: i16 = 0;

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == IRQ_UART0_RX {
        // SAFETY: UART0's registers, which `main` handed the UART.
        unsafe { CmsdkUart::clear_rx_interrupt(UART0) };
    }
}

pub struct An386;

impl Board for An386 {
    const NAME: &'static str = "mps2-an386 (qemu)";
    /// SysTick at 25 MHz under `-icount shift=0`: 1 tick = 40 instructions.
    const COST_UNIT: &'static str = "instructions";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn now(&mut self) -> u64 {
        facemark_app::clock::ticks() * 40
    }

    fn event(&mut self, e: Event<'_>) {
        facemark_app::log_event(e);
    }
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
    // SAFETY: NVIC ISER0: lets the receive interrupt wake the core.
    unsafe { write_volatile(0xe000_e100 as *mut u32, 1 << IRQ_UART0_RX) };
    facemark_app::run(An386, &mut uart, halt)
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

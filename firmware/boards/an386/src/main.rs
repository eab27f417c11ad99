//! Facemark on the Arm MPS2 AN386 (Cortex-M4F) as `qemu-system-arm -machine
//! mps2-an386` models it: CMSDK APB UART0 at 0x40004000, SysTick at 25 MHz,
//! semihosting for the defmt log and for exiting.
#![no_std]
#![no_main]

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use facemark_serve::{Board, Event, Link};

/// CMSDK APB UART0.
const UART0: usize = 0x4000_4000;
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTCLEAR: usize = 0x0c;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INT_EN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;
/// UART0's receive interrupt line on the AN386.
const IRQ_UART0_RX: i16 = 0;

fn reg(offset: usize) -> *mut u32 {
    (UART0 + offset) as *mut u32
}

/// The polled UART; it sleeps (WFI) until the receive interrupt while idle.
struct Uart0;

impl Uart0 {
    fn init() -> Self {
        // SAFETY: the UART's own registers; QEMU needs BAUDDIV >= 16.
        unsafe {
            write_volatile(reg(BAUDDIV), 16);
            write_volatile(reg(CTRL), CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN);
            // NVIC ISER0: let the receive interrupt wake the core.
            write_volatile(0xe000_e100 as *mut u32, 1 << IRQ_UART0_RX);
        }
        Uart0
    }
}

impl Link for Uart0 {
    type Error = Infallible;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        loop {
            cortex_m::interrupt::disable();
            // SAFETY: UART0 registers.
            if unsafe { read_volatile(reg(STATE)) } & STATE_RX_FULL != 0 {
                // SAFETY: as above; reading DATA frees the holding register.
                *first = unsafe { read_volatile(reg(DATA)) } as u8;
                // SAFETY: interrupts were enabled before this critical section.
                unsafe { cortex_m::interrupt::enable() };
                return Ok(1);
            }
            // A pending interrupt wakes WFI even while masked; unmasking
            // then runs its handler. So no byte arrives unseen.
            cortex_m::asm::wfi();
            // SAFETY: as above.
            unsafe { cortex_m::interrupt::enable() };
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        for &b in bytes {
            // SAFETY: UART0 registers.
            unsafe {
                while read_volatile(reg(STATE)) & STATE_TX_FULL != 0 {}
                write_volatile(reg(DATA), u32::from(b));
            }
        }
        Ok(())
    }
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == IRQ_UART0_RX {
        // SAFETY: UART0 registers; acknowledges the receive interrupt.
        unsafe { write_volatile(reg(INTCLEAR), INT_RX) };
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
    let mut uart = Uart0::init();
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

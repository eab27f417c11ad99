//! Facemark on a 1 MB-flash board: the STM32F405 (Cortex-M4F) of
//! `qemu-system-arm -machine netduinoplus2`, the common TinyML class (1 MB
//! flash, 128 KB SRAM). USART1 at 0x40011000 (QEMU's first serial port;
//! PA9/PA10 on the chip), SysTick on the 168 MHz core clock as QEMU models
//! it, semihosting for the defmt log and for exiting. It embeds the model
//! with dense layer 1 in int4 (`.cargo/config.toml`): the int8 one does not
//! fit, and `memory.x` makes the linker say so.
#![no_std]
#![no_main]

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use facemark_serve::{Board, Event, Link};

/// RCC: the clock enables (QEMU ignores them; the chip needs them).
const RCC_AHB1ENR: usize = 0x4002_3830;
const RCC_APB2ENR: usize = 0x4002_3844;
const GPIOA_EN: u32 = 1 << 0;
const USART1_EN: u32 = 1 << 4;
/// GPIOA: PA9 (TX) and PA10 (RX) to alternate function 7 (USART1).
const GPIOA_MODER: usize = 0x4002_0000;
const GPIOA_AFRH: usize = 0x4002_0024;

/// USART1 (the STM32F2/F4 USART as QEMU's `stm32f2xx-usart` models it).
const USART1: usize = 0x4001_1000;
const SR: usize = 0x00;
const DR: usize = 0x04;
const BRR: usize = 0x08;
const CR1: usize = 0x0c;
const SR_RXNE: u32 = 1 << 5;
const SR_TXE: u32 = 1 << 7;
const CR1_UE: u32 = 1 << 13;
const CR1_RXNEIE: u32 = 1 << 5;
const CR1_TE: u32 = 1 << 3;
const CR1_RE: u32 = 1 << 2;
/// 115200 baud from the 16 MHz HSI the chip starts on (16e6 / 115200 =
/// 138.9, mantissa 8 and fraction 11 in sixteenths).
const BRR_115200_AT_16MHZ: u32 = (8 << 4) | 11;
/// USART1's interrupt line on the STM32F405.
const IRQ_USART1: u32 = 37;
const NVIC_ISER: usize = 0xe000_e100;
const NVIC_ICER: usize = 0xe000_e180;

fn reg(offset: usize) -> *mut u32 {
    (USART1 + offset) as *mut u32
}

/// Sets or clears USART1's enable bit in the NVIC.
fn nvic_usart1(enable: bool) {
    let base = if enable { NVIC_ISER } else { NVIC_ICER };
    let word = (base + 4 * (IRQ_USART1 as usize / 32)) as *mut u32;
    // SAFETY: the NVIC's set/clear-enable registers; writing a 1 touches
    // only this line.
    unsafe { write_volatile(word, 1 << (IRQ_USART1 % 32)) };
}

/// The polled USART; it sleeps (WFI) until the receive interrupt while idle.
struct Usart1;

impl Usart1 {
    fn init() -> Self {
        // SAFETY: RCC, GPIOA and USART1 registers, configured once at boot
        // before anything else uses them.
        unsafe {
            let ahb = RCC_AHB1ENR as *mut u32;
            write_volatile(ahb, read_volatile(ahb) | GPIOA_EN);
            let apb = RCC_APB2ENR as *mut u32;
            write_volatile(apb, read_volatile(apb) | USART1_EN);
            let moder = GPIOA_MODER as *mut u32;
            let m = read_volatile(moder) & !(0b1111 << 18);
            write_volatile(moder, m | (0b1010 << 18));
            let afrh = GPIOA_AFRH as *mut u32;
            let a = read_volatile(afrh) & !(0xff << 4);
            write_volatile(afrh, a | (0x77 << 4));
            write_volatile(reg(BRR), BRR_115200_AT_16MHZ);
            write_volatile(reg(CR1), CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE);
        }
        Usart1
    }
}

impl Link for Usart1 {
    type Error = Infallible;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        *first = facemark_app::uart::read_byte_asleep(
            // SAFETY: USART1 registers; reading DR clears RXNE and the line.
            || unsafe {
                (read_volatile(reg(SR)) & SR_RXNE != 0).then(|| read_volatile(reg(DR)) as u8)
            },
            // The receive line stays high while a byte waits, so the
            // handler masks it in the NVIC; unmasking it here pends it
            // again if a byte came meanwhile.
            || nvic_usart1(true),
        );
        Ok(1)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        for &b in bytes {
            // SAFETY: USART1 registers.
            unsafe {
                while read_volatile(reg(SR)) & SR_TXE == 0 {}
                write_volatile(reg(DR), u32::from(b));
            }
        }
        Ok(())
    }
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == IRQ_USART1 as i16 {
        nvic_usart1(false);
    }
}

pub struct Netduinoplus2;

impl Board for Netduinoplus2 {
    const NAME: &'static str = "netduinoplus2 stm32f405 (qemu)";
    /// SysTick at 168 MHz under `-icount shift=0` (1 instruction = 1 ns):
    /// 21 ticks = 125 instructions.
    const COST_UNIT: &'static str = "instructions";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn now(&mut self) -> u64 {
        facemark_app::clock::ticks() * 125 / 21
    }

    fn event(&mut self, e: Event<'_>) {
        facemark_app::log_event(e);
    }
}

#[entry]
fn main() -> ! {
    // The USART first: QEMU drops bytes that reach a disabled one.
    let mut usart = Usart1::init();
    facemark_app::stack::paint();
    let Some(cp) = cortex_m::Peripherals::take() else {
        halt()
    };
    facemark_app::clock::start(cp.SYST);
    facemark_app::run(Netduinoplus2, &mut usart, halt)
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
